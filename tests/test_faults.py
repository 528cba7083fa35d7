"""The suite under bad input and faults (issue: nothing lost, nothing run from a file): each case ends in
a one-line error with a non-zero exit, or a correct result, and leaves nothing half-written."""
from __future__ import annotations

import os

import pytest
import torch

from ssl_bench.__main__ import main

DINO_TINY = ["method=dino", "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16",
             "data.n_local=0", "data.train_per_class=8", "data.test_per_class=4", "eval.knn_k=[5]",
             "eval.baseline=false", "optim.epochs=1"]


class _Evil:
    """Unpickling this runs a shell command (what a crafted checkpoint.pt can do under weights_only=False)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def finished_run(tiny, tmp_path):
    assert main(["run", *DINO_TINY, *tiny, f"run_dir={tmp_path / 'run'}"]) == 0
    return tmp_path / "run"


def test_a_checkpoint_that_would_run_code_is_refused(finished_run, tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"method": _Evil(marker), "epoch": 1}, finished_run / "checkpoint.pt")
    for cmd in (["eval", f"run={finished_run}", "evals=knn"],
                ["run", *DINO_TINY, "optim.epochs=2", f"run_dir={finished_run}", "resume=auto", "progress=false"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refusing checkpoint" in err and "checkpoint.pt" in err
        assert not marker.exists()


def test_a_corrupt_checkpoint_is_a_one_line_error(finished_run, capsys):
    (finished_run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    assert main(["eval", f"run={finished_run}", "evals=knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err and "checkpoint.pt" in err
