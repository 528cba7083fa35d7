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


def test_a_checkpoint_that_would_run_code_is_refused(finished_run, tiny, tmp_path, capsys):
    marker = tmp_path / "pwned"
    torch.save({"method": _Evil(marker), "epoch": 1}, finished_run / "checkpoint.pt")
    for cmd in (["eval", f"run={finished_run}", "evals=knn"],
                ["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"]):
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "refusing checkpoint" in err and "checkpoint.pt" in err
        assert not marker.exists()


def test_a_corrupt_checkpoint_is_a_one_line_error(finished_run, capsys):
    (finished_run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    assert main(["eval", f"run={finished_run}", "evals=knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err and "checkpoint.pt" in err


def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}


def test_resume_with_other_trajectory_settings_is_refused(finished_run, tiny, capsys):
    before = _files(finished_run)
    for change in ("optim.batch_size=8", "method.teacher_temp=0.05", "seed=1", "data.n_local=2", "method=byol"):
        over = [o for o in DINO_TINY if not o.startswith("method")] if change == "method=byol" else DINO_TINY
        assert main(["run", *over, *tiny, change, f"run_dir={finished_run}", "resume=auto"]) == 2
        err = capsys.readouterr().err.strip()
        key = change.split("=")[0].replace("method", "method.name") if change == "method=byol" else change.split("=")[0]
        assert len(err.splitlines()) == 1 and key in err and "other settings" in err, err
        assert _files(finished_run) == before  # nothing overwritten


def test_resume_may_change_evaluation_settings(finished_run, tiny):
    assert main(["run", *DINO_TINY, *tiny, "eval.knn_k=[3]", f"run_dir={finished_run}", "resume=auto"]) == 0


def test_a_run_folder_in_use_is_refused(finished_run, tiny, capsys):
    from ssl_bench.results import RunDir

    before = _files(finished_run)
    with RunDir(finished_run).lock():
        assert main(["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in use by pid" in err and str(finished_run) in err
    assert _files(finished_run) == before
    assert main(["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"]) == 0  # released


@pytest.mark.parametrize("preset,key", [
    ({"partition": "debug\n#SBATCH --wrap=touch /tmp/x"}, "cluster.partition"),
    ({"comment": "a\rb"}, "cluster.comment"),
    ({"extra": ["mail-user=a\nrm -rf x"]}, "cluster.extra"),
    ({"extra": ["bad key=1"]}, "cluster.extra"),
])
def test_hostile_cluster_values_are_refused(preset, key, tmp_path, capsys):
    """A shared cluster preset file with a newline in a value would add a line to the batch script."""
    import yaml

    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(preset))
    assert main(["run", "launcher=slurm", f"cluster={path}", f"results_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override,key", [
    ("optim.epochs=0", "optim.epochs"), ("optim.batch_size=0", "optim.batch_size"), ("data.n_local=-1", "data.n_local"),
    ("backbone.img_size=0", "backbone.img_size"), ("data.global_scale=[1.0,0.2]", "data.global_scale"),
    ("optim.lr=-0.1", "optim.lr"), ("data.aug.jitter_p=1.5", "data.aug.jitter_p"),
])
def test_numeric_keys_are_range_checked(override, key, tmp_path, capsys):
    assert main(["run", override, f"results_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "valid" in err
    assert not (tmp_path / "runs").exists()
