"""The suite under bad input and faults (issue: nothing lost, nothing run from a file): each case ends in
a one-line error with a non-zero exit, or a correct result, and leaves nothing half-written."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ssl_bench.__main__ import main
from ssl_bench.results import RunDir

DINO_TINY = [
    "method=dino",
    "method.out_dim=64",
    "method.hidden_dim=32",
    "method.bottleneck_dim=16",
    "data.n_local=0",
    "data.train_per_class=8",
    "data.test_per_class=4",
    "eval.knn_k=[5]",
    "eval.baseline=false",
    "optim.epochs=1",
]


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
    for cmd in (
        ["eval", f"run={finished_run}", "evals=knn"],
        ["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"],
    ):
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


@pytest.mark.parametrize(
    "preset,key",
    [
        ({"partition": "debug\n#SBATCH --wrap=touch /tmp/x"}, "cluster.partition"),
        ({"comment": "a\rb"}, "cluster.comment"),
        ({"extra": ["mail-user=a\nrm -rf x"]}, "cluster.extra"),
        ({"extra": ["bad key=1"]}, "cluster.extra"),
    ],
)
def test_hostile_cluster_values_are_refused(preset, key, tmp_path, capsys):
    """A shared cluster preset file with a newline in a value would add a line to the batch script."""
    import yaml

    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(preset))
    assert main(["run", "launcher=slurm", f"cluster={path}", f"results_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "override,key",
    [
        ("optim.epochs=0", "optim.epochs"),
        ("optim.batch_size=0", "optim.batch_size"),
        ("data.n_local=-1", "data.n_local"),
        ("backbone.img_size=0", "backbone.img_size"),
        ("data.global_scale=[1.0,0.2]", "data.global_scale"),
        ("optim.lr=-0.1", "optim.lr"),
        ("data.aug.jitter_p=1.5", "data.aug.jitter_p"),
        ("eval.knn_temperature=0", "eval.knn_temperature"),
        ("eval.knn_k=[0]", "eval.knn_k"),
        ("eval.knn_k=[-5]", "eval.knn_k"),
        ("eval.knn_k=[]", "eval.knn_k"),
        ("eval.seg_mass=2", "eval.seg_mass"),
        ("eval.linear_epochs=0", "eval.linear_epochs"),
        ("eval.batch_size=0", "eval.batch_size"),
        ("eval.linear_c_grid=[]", "eval.linear_c_grid"),
        ("eval.linear_c_grid=[-1]", "eval.linear_c_grid"),
        ("eval.evals=[[knn]]", "eval.evals"),
        ("checkpoint_every_steps=-1", "checkpoint_every_steps"),
        ("optim.warmup_epochs=100", "optim.warmup_epochs"),
        ("optim.min_lr=1", "optim.min_lr"),
        ("threads=-1", "threads"),
        ("nproc=0", "nproc"),
        ("nproc=100000", "nproc"),
        ("nproc=2 optim.batch_size=3", "optim.batch_size"),
        ("seed=-1", "seed"),
        ("seed=1099511627776", "seed"),
        ("seed=18446744073709551616", "seed"),
        ("backbone.patch_size=7", "backbone.patch_size"),
        ("data.global_size=1", "data.global_size"),
        ("backbone.depth=0", "backbone.depth"),
        ("method.out_dim=0", "method.out_dim"),
        ("data.n_global=1", "data.n_global"),
    ],
)
def test_numeric_keys_are_range_checked(override, key, tmp_path, capsys):
    assert main(["run", *override.split(), f"results_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "valid" in err
    assert not (tmp_path / "runs").exists()


def test_the_evals_shorthand_takes_a_list_as_well():
    from ssl_bench.config import build_config

    assert build_config(["evals=[knn,linear]"]).eval.evals == build_config(["evals=knn,linear"]).eval.evals
    assert build_config(["evals=[]"]).eval.evals == []


def test_threads_above_the_cores_are_named(caplog):
    from ssl_bench.config import build_config
    from ssl_bench.engine.setup import prepare_process

    before = torch.get_num_threads()
    try:
        with caplog.at_level("WARNING"):
            prepare_process(build_config([f"threads={(os.cpu_count() or 1) + 1}"]))
    finally:
        torch.set_num_threads(before)
    assert any("exceeds" in r.getMessage() and "CPU cores" in r.getMessage() for r in caplog.records)


def test_a_diverging_run_stops_at_the_step_with_one_line(tiny, tmp_path, capsys):
    """lr 1e4 blows the weights up within a few steps: the run stops at that step (not at the epoch's end)
    naming it; metrics.json holds no bare NaN anywhere."""
    rc = main(
        [
            "run",
            *DINO_TINY,
            *tiny,
            "optim.lr=1e4",
            "optim.warmup_epochs=0",
            "optim.clip_grad=0",
            "optim.epochs=3",
            f"run_dir={tmp_path / 'div'}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "diverged at step" in err, err
    assert "precision=fp32" not in err  # an fp32 run is not told to use fp32
    step = int(err.split("diverged at step ")[1].split()[0])
    assert step < 3 * 4  # stopped before the run's end, at the step it happened


def test_parameter_norm_guard_stops_finite_explosions(tiny, tmp_path, capsys):
    rc = main(["run", *DINO_TINY, *tiny, "optim.max_param_norm=1.0", f"run_dir={tmp_path / 'big'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "optim.max_param_norm=1" in err and "diverged at step 1 " in err


def test_nan_features_are_refused_and_metrics_json_is_strict(tmp_path):
    import json
    import math

    from ssl_bench.atomic import write_json
    from ssl_bench.config import build_config
    from ssl_bench.data.datasets import build_datasets
    from ssl_bench.errors import UserError
    from ssl_bench.evals.features import EvalContext, split_features
    from tests.conftest import TINY

    cfg = build_config(TINY + ["data.train_per_class=4", "data.test_per_class=2"])
    splits = build_datasets(cfg.dataset, cfg.data)

    class NaN(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 4), float("nan"))

    with pytest.raises(UserError, match="NaN or inf"):
        split_features(NaN(), EvalContext(cfg, splits, torch.device("cpu"), cache={}))
    write_json(tmp_path / "m.json", [{"value": float("nan")}, {"value": math.inf}, {"value": 1.0}])
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert [r["value"] for r in json.loads(text)] == [None, None, 1.0]


def test_metrics_are_written_after_each_evaluation(tiny, tmp_path, monkeypatch):
    """A failing later evaluation loses none of the earlier ones."""
    from ssl_bench.registry import EVALS

    def boom(encoder, ctx):
        raise RuntimeError("the second evaluation failed")

    EVALS.register("boom")(boom)
    try:
        with pytest.raises(RuntimeError):
            main(["run", *DINO_TINY, *tiny, "evals=knn,boom", f"run_dir={tmp_path / 'r'}"])
    finally:
        EVALS.unregister("boom")
    rows = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert ("knn", "top1") in {(r["eval"], r["metric"]) for r in rows}


def test_report_skips_a_corrupt_run_and_names_it(tmp_path):
    import subprocess
    import sys

    from tests.report.test_report import make_runs

    root = make_runs(tmp_path / "runs")
    (root / "dino-s0" / "metrics.json").write_text("{ not json")
    (root / "simclr-s1" / "config.yaml").write_text("method: [")
    r = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "report", f"results_root={root}", f"out={tmp_path / 't'}"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "skipped 2 run folder(s)" in r.stderr and "dino-s0" in r.stderr and "simclr-s1" in r.stderr
    assert "Traceback" not in r.stderr and "(n=1)" in r.stdout


def test_train_and_test_classes_must_match_by_name(tmp_path, capsys):
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path / "f", classes=2)
    (root / "test" / "class1").rename(root / "test" / "zebra")
    assert (
        main(["run", "preset=default", "dataset=imagefolder", f"data.root={root}", f"results_root={tmp_path / 'runs'}"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test/ lacks class1" in err and "zebra" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("values", [(0, 1), (0, 255), (3, 250)])
def test_masks_follow_one_rule(tmp_path, values):
    """0/1, 0/255 and noisy (JPEG-like) masks all read as the drawn foreground; images without a mask
    are left out with a log line."""
    import numpy as np
    from PIL import Image

    from ssl_bench.data.masks import MaskPairs

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    m = np.full((8, 8), values[0], np.uint8)
    m[2:5, 2:5] = values[1]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "b.png")
    Image.fromarray(m).save(tmp_path / "masks" / "a.png")
    pairs = MaskPairs(tmp_path)
    assert len(pairs) == 1 and pairs[0][1].sum() == 9 and pairs[0][1][3, 3]


def test_a_file_half_written_by_a_killed_run_is_removed_on_resume(finished_run, tiny):
    stale = finished_run / ".checkpoint.pt.k3x9ab_q.tmp"  # the name atomic.write_atomic's mkstemp gives
    stale.write_bytes(b"half a checkpoint")
    mine = [finished_run / ".notes.tmp", finished_run / ".checkpoint.pt.draft.tmp"]  # a user's own files
    for f in mine:
        f.write_text("keep me")
    assert main(["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"]) == 0
    assert not stale.exists()
    assert all(f.read_text() == "keep me" for f in mine)


def test_status_tells_a_killed_local_run_from_a_running_one(finished_run, tmp_path, capsys):
    from ssl_bench.results import RunDir

    (finished_run / "metrics.json").unlink()  # trained epochs and a checkpoint, no result: not finished
    assert main(["status", str(finished_run)]) == 0
    assert capsys.readouterr().out.startswith("stopped")
    with RunDir(finished_run).lock():  # a live process holds the folder
        assert main(["status", str(finished_run)]) == 0
        assert capsys.readouterr().out.startswith("running")
    (finished_run / "train.jsonl").write_text("{ broken")
    assert main(["status", str(finished_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("unreadable") and "JSONDecodeError" in out and "1 unreadable" in out
    manifest = tmp_path / "sweep.json"
    manifest.write_text("{ not json")
    assert main(["status", str(manifest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sweep.json" in err


def test_evaluation_data_is_checked_before_training(tmp_path, capsys):
    """A broken test image or a one-class training split under the linear probe fails in seconds, before
    any training, naming the problem; no run folder is left."""
    from tests.conftest import make_image_folder

    root = make_image_folder(tmp_path / "f", classes=2)
    bad = root / "test" / "class1" / "003.png"
    bad.write_bytes(b"not a png")
    common = [
        "preset=default",
        "dataset=imagefolder",
        f"data.root={root}",
        "backbone.img_size=16",
        "backbone.patch_size=4",
        "optim.batch_size=4",
        f"results_root={tmp_path / 'runs'}",
        "progress=false",
    ]
    assert main(["run", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "003.png" in err
    assert not (tmp_path / "runs").exists()  # failed before the run folder existed
    one = make_image_folder(tmp_path / "g", classes=1)
    assert (
        main(["run", *common[2:], "preset=default", "dataset=imagefolder", f"data.root={one}", "evals=knn,linear"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert "at least 2 classes" in err


@pytest.mark.parametrize("shape", [(), (1,)])
def test_divergence_guard_takes_any_loss_shape(shape, tmp_path):
    from ssl_bench.engine.guards import DivergenceGuard
    from ssl_bench.errors import UserError

    p = torch.nn.Parameter(torch.ones(3))
    guard = DivergenceGuard([p], 10.0, torch.device("cpu"), tmp_path / "checkpoint.pt", bf16=True)
    guard.check(torch.ones(shape), step=1, epoch=0)  # healthy: nothing happens
    guard.saved(1, 5)
    with pytest.raises(UserError, match=r"step 6 .*nan.*epoch 1, step 5.*precision=fp32"):
        guard.check(torch.full(shape, float("nan")), step=6, epoch=1)


def test_divergence_guard_cadence_on_a_gpu_and_the_epoch_end(tmp_path):
    """On a GPU every 25th step is checked (the host sync it costs); an epoch's last step off that cadence
    is checked at the epoch's end, one on it is not checked twice."""
    from ssl_bench.engine.guards import DivergenceGuard
    from ssl_bench.errors import UserError

    guard = DivergenceGuard([], 0.0, torch.device("cuda"), tmp_path / "checkpoint.pt", bf16=False)
    nan = torch.tensor(float("nan"))
    guard.check(nan, step=7, epoch=0)  # off the cadence: not checked
    guard.check(nan, step=25, epoch=0, end_of_epoch=True)  # its regular check already ran at step 25
    with pytest.raises(UserError, match="step 7 "):
        guard.check(nan, step=7, epoch=0, end_of_epoch=True)
    with pytest.raises(UserError, match="step 25 "):
        guard.check(nan, step=25, epoch=0)


def test_a_local_sweep_goes_on_past_a_diverging_member(tiny, tmp_path, capsys):
    """`sweep optim.lr=1e6,1e-3`: the first member diverges, the second still trains; the exit code counts the
    failed member and `status` says failed (with its one-line reason) and done."""
    root = tmp_path / "runs"
    args = ["sweep", *DINO_TINY, *tiny, "optim.lr=1e6,1e-3", "progress=false", f"results_root={root}"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "1 of 2 sweep members failed" in out
    (manifest,) = (tmp_path / "sweeps").glob("*.json")
    members = json.loads(manifest.read_text())["members"]
    assert "diverged" in members[0]["error"] and "error" not in members[1]
    assert main(["status", str(manifest)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("failed") and "diverged" in lines[1]
    assert lines[2].startswith("done") and lines[-1].startswith("0 pending, 0 running, 1 done, 1 failed")


def test_eval_run_refuses_a_run_still_training_or_stopped_early(tiny, tmp_path, monkeypatch, capsys):
    """`eval run=` on a folder a training process holds, or on a run killed after epoch 1 of 2, is one line and
    exit 2, and the run's metrics stay as they were (nothing that `report` would show as finished)."""
    from tests.conftest import killed_after_checkpoint

    path = tmp_path / "run"
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import train

    with killed_after_checkpoint(monkeypatch, lambda epoch, step: epoch == 1):
        train(build_config([*DINO_TINY, *tiny, "optim.epochs=2", f"run_dir={path}"]))
    before = (path / "metrics.json").read_bytes() if (path / "metrics.json").exists() else None
    assert main(["eval", f"run={path}", "evals=knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stopped after epoch 1 of 2" in err and "resume=auto" in err and "\n" not in err
    after = (path / "metrics.json").read_bytes() if (path / "metrics.json").exists() else None
    assert after == before
    monkeypatch.undo()
    assert main(["run", *DINO_TINY, *tiny, "optim.epochs=2", f"run_dir={path}", "resume=auto"]) == 0
    capsys.readouterr()
    with RunDir(path).lock():  # as a training process holds it
        assert main(["eval", f"run={path}", "evals=knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is in use by" in err and "\n" not in err
    assert main(["eval", f"run={path}", "evals=knn"]) == 0


def test_resume_compares_against_the_checkpoint_s_own_settings(tiny, tmp_path, monkeypatch, capsys):
    """With config.yaml deleted or edited by hand, `resume=auto` with another batch size is refused: the
    checkpoint carries the settings it was trained with. The same settings resume."""
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import train
    from tests.conftest import killed_after_checkpoint

    path = tmp_path / "run"
    base = [*DINO_TINY, *tiny, "optim.epochs=2", f"run_dir={path}"]
    with killed_after_checkpoint(monkeypatch, lambda epoch, step: epoch == 1):
        train(build_config(base))
    monkeypatch.undo()
    (path / "config.yaml").unlink()
    assert main(["run", *base, "optim.batch_size=8", "resume=auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert "optim.batch_size" in err and "\n" not in err
    # a config.yaml edited to agree with the new settings is not what the checkpoint was trained with
    (path / "config.yaml").write_text("optim:\n  batch_size: 8\n")
    assert main(["run", *base, "optim.batch_size=8", "resume=auto"]) == 2
    assert "optim.batch_size" in capsys.readouterr().err
    (path / "config.yaml").unlink()
    assert main(["run", *base, "resume=auto"]) == 0
    assert len(RunDir(path).read_train_log()) == 2


def test_status_tells_stopped_failed_missing_and_done_apart(tmp_path, capsys):
    """A run whose linear probe never wrote its rows is failed (naming it), a folder killed before its first
    checkpoint is stopped, a submitted job's deleted folder is missing; only a complete run is done."""

    def folder(name, evals, metrics, log=True):
        path = tmp_path / name
        path.mkdir()
        (path / "config.yaml").write_text(json.dumps({"eval": {"evals": evals}}))
        if log:
            (path / "train.jsonl").write_text('{"epoch": 1, "loss": 1.0}\n')
        if metrics is not None:
            (path / "metrics.json").write_text(json.dumps(metrics))
        return str(path)

    train = {"eval": "train", "metric": "final_loss", "value": 1.0}
    knn = {"eval": "knn", "metric": "top1", "value": 0.5}
    members = [
        {"run_dir": folder("done", ["knn"], [train, knn]), "job_id": None},
        {"run_dir": folder("probe_failed", ["knn", "linear"], [train, knn]), "job_id": None},
        {"run_dir": folder("killed_early", ["knn"], None, log=False), "job_id": None},
        {"run_dir": str(tmp_path / "deleted"), "job_id": "999999"},
    ]
    manifest = tmp_path / "sweep.json"
    manifest.write_text(json.dumps({"members": members}))
    assert main(["status", str(manifest)]) == 0
    out = capsys.readouterr().out.splitlines()
    states = [line.split()[0] for line in out if not line.startswith(" ") and "job" in line]
    assert states == ["done", "failed", "stopped", "missing"], out
    assert any("evaluation linear did not finish" in line for line in out)
    assert out[-1].startswith("0 pending, 0 running, 1 done, 1 failed, 1 stopped, 1 missing")


def test_export_refuses_bad_targets_and_diverged_weights(finished_run, tmp_path, monkeypatch, capsys):
    """`export` never overwrites its weights with metadata, writes nothing into a folder that is not there,
    leaves nothing half-written when the disk fails, and does not export NaN weights."""
    import errno

    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    cases = {
        "enc.json": "the .safetensors and .json are written beside it",
        "adir": "is a folder",
        "nope/enc.pt": "does not exist",
        "afile/enc.pt": "is a file",
        "": "out= is empty",
    }
    for out, message in cases.items():
        target = f"out={tmp_path / out}" if out else "out="
        assert main(["export", f"run={finished_run}", target]) == 2, out
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (out, err)
    assert not (tmp_path / "enc.json").exists() and not list((tmp_path / "adir").iterdir())

    import ssl_bench.engine.weights as W

    def disk_full(path, fn, mode="w"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(W, "write_atomic", disk_full)
    (tmp_path / "full").mkdir()
    assert main(["export", f"run={finished_run}", f"out={tmp_path / 'full' / 'enc.pt'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write the export (No space left on device)" in err.splitlines()[-1]
    assert not list((tmp_path / "full").iterdir())  # the .pt written before the failure is removed
    monkeypatch.undo()

    ckpt = torch.load(finished_run / "checkpoint.pt", weights_only=True)
    ckpt["method"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in ckpt["method"].items()
    }
    torch.save(ckpt, finished_run / "checkpoint.pt")
    assert main(["export", f"run={finished_run}", f"out={tmp_path / 'nan.pt'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "hold NaN or inf" in err and "\n" not in err and not (tmp_path / "nan.pt").exists()


def test_a_symlink_loop_in_an_image_folder_is_refused(image_folder, capsys, tmp_path):
    """`ln -s .. ROOT/train/class0/loop` would read the training images again at every depth."""
    (image_folder / "train" / "class0" / "loop").symlink_to("..")
    args = [
        "run",
        "preset=default",
        "dataset=imagefolder",
        f"data.root={image_folder}",
        f"results_root={tmp_path / 'runs'}",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "is a symlink loop" in err and "loop" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_no_setting_from_any_source_puts_a_line_into_a_batch_script(tmp_path, capsys):
    """A preset's `run_dir: "x\\ntouch PWNED\\n#"` (or results_root, or any string key) is refused before any
    batch script is written: one validator for every string of the config."""
    marker = tmp_path / "PWNED"
    preset = tmp_path / "evil.yaml"
    preset.write_text(json.dumps({"run_dir": f"x\ntouch {marker}\n#"}))
    assert main(["run", f"preset={preset}", "launcher=slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad value for 'run_dir'" in err and "newline or control character" in err and "\n" not in err
    for key in ("results_root", "data.root", "log.wandb_project"):
        assert main(["config", f"{key}=a\x1bb"]) == 2, key
        assert main(["config", f"{key}=a\nb"]) == 2, key
        assert capsys.readouterr().err.count(f"bad value for '{key}'") == 2
    assert not marker.exists()


def test_a_yaml_alias_bomb_is_refused_as_a_preset_and_in_a_received_run(finished_run, tmp_path, capsys):
    """A 1 KB YAML alias bomb (9 levels of 9 aliases) is refused at once, as a preset and as a run folder's
    config.yaml given to `eval run=`; so is a config.yaml that is not a config at all."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\n"
    assert len(bomb) < 1200
    preset = tmp_path / "bomb.yaml"
    preset.write_text(bomb)
    assert main(["config", f"preset={preset}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "expands to more than" in err and "\n" not in err
    (finished_run / "config.yaml").write_text(bomb)
    assert main(["eval", f"run={finished_run}"]) == 2
    assert "expands to more than" in capsys.readouterr().err
    for garbage in ("[1, 2]\n", "", "just text\n", "method: dino\n", "!!python/object/apply:os.system ['true']\n"):
        (finished_run / "config.yaml").write_text(garbage)
        assert main(["eval", f"run={finished_run}"]) == 2, garbage
        err = capsys.readouterr().err.strip()
        assert "config.yaml" in err and "\n" not in err, (garbage, err)


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.root=~nouser_xyz/x", "there is no user 'nouser_xyz' on this machine"),
        ("results_root=~nouser_xyz", "bad value for 'results_root'"),
    ],
)
def test_unknown_home_folders_are_refused(override, message, capsys):
    assert main(["config", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_os_refusals_random_checkpoints_and_broken_manifests_are_one_line(tmp_path, capsys):
    """The OS's refusals (a run_dir that is a file, a name over 255 bytes) become one line in one place; a
    file of random bytes is not a checkpoint; a manifest whose members are not entries with a run_dir is
    named; and a full disk under torch.save is reported as one."""
    import errno

    from ssl_bench.atomic import save_torch

    (tmp_path / "afile").write_text("x")
    for run_dir, message in ((tmp_path / "afile", "File exists"), (tmp_path / ("a" * 300), "File name too long")):
        assert main(["run", *DINO_TINY, f"run_dir={run_dir}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {message}") and "\n" not in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 20)
    assert main(["eval", f"weights={junk}", "backbone=vit_tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a torch checkpoint" in err and "\n" not in err
    for members in ('"x"', "[null]", '[{"job_id": null}]', "[]"):
        manifest = tmp_path / "m.json"
        manifest.write_text(f'{{"members": {members}}}')
        assert main(["status", str(manifest)]) == 2, members
        err = capsys.readouterr().err.strip()
        assert "'members' must be a list of entries with a run_dir" in err and "\n" not in err

    class FullDisk:
        def __reduce__(self):
            raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file")

    with pytest.raises(OSError) as caught:
        save_torch(tmp_path / "x.pt", {"a": FullDisk()})
    assert caught.value.errno == errno.ENOSPC and not list(tmp_path.glob(".x.pt.*"))


def test_a_checkpoint_of_random_bytes_is_one_line_on_eval_and_resume(finished_run, tiny, capsys):
    (finished_run / "checkpoint.pt").write_bytes(bytes(range(256)) * 40)
    assert main(["eval", f"run={finished_run}", "evals=knn"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint.pt" in err and "\n" not in err, err
    assert main(["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checkpoint.pt" in err and "\n" not in err, err


def _without_root_override(cmd: list[str]) -> list[str]:
    """``cmd`` as a process that file permissions bind: root ignores a read-only folder, so as root the
    command runs without the capabilities that override them (util-linux ``setpriv``)."""
    import shutil

    if os.geteuid() != 0:
        return cmd
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder cannot be made to bind")
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps, *cmd]


def test_read_only_folders_are_one_line_and_nothing_is_written(finished_run, tiny, tmp_path):
    """A read-only run_dir, results_root, report / plot output or export folder: one line naming the path,
    exit 2, nothing written in it."""
    import subprocess
    import sys

    from tests.report.test_report import make_runs

    runs = make_runs(tmp_path / "fixture_runs")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    cases = [
        ["run", *DINO_TINY, *tiny, f"run_dir={ro / 'x'}"],
        ["run", *DINO_TINY, *tiny, f"results_root={ro}"],
        ["report", f"results_root={runs}", f"out={ro / 't'}"],
        ["plot", "bar", f"results_root={runs}", f"out={ro / 'f'}"],
        ["export", f"run={finished_run}", f"out={ro / 'enc.pt'}"],
    ]
    try:
        for args in cases:
            proc = subprocess.run(
                _without_root_override([sys.executable, "-m", "ssl_bench", *args]),
                capture_output=True,
                text=True,
                timeout=300,
            )
            lines = proc.stderr.strip().splitlines()  # progress logs, then the error as the last line
            err = lines[-1] if lines else ""
            assert proc.returncode == 2, (args, proc.stderr)
            assert err.startswith("error:") and "Permission denied" in err and str(ro) in err, (args, proc.stderr)
            assert "Traceback" not in proc.stderr and sum(x.startswith("error:") for x in lines) == 1
            assert not any(ro.iterdir()), args
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(
    "text",
    ["partition: [unclosed\n", "!!python/object/apply:os.system ['true']\n", "- a list\n", "just words\n"],
)
def test_a_broken_cluster_preset_is_one_line(text, tmp_path, capsys):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    assert main(["config", "launcher=slurm", f"cluster={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cluster.yaml" in err and "\n" not in err and "Traceback" not in err


def test_a_full_disk_while_training_checkpoints_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    """The disk fills while an epoch's checkpoint is written: one line saying so, exit 2, and the
    checkpoint on disk is the previous complete one, which resume reads."""
    from ssl_bench.config import load_config
    from ssl_bench.engine.checkpoint import load_checkpoint
    from ssl_bench.engine.train import build_method

    run_dir = tmp_path / "run"
    real = torch.save
    calls = {"n": 0}

    def fill_disk(obj, f, *args, **kwargs):  # the epoch-2 checkpoint: some bytes, then the disk is full
        if isinstance(obj, dict) and "epoch" in obj:  # a training checkpoint
            calls["n"] += 1
            if calls["n"] == 2:
                f.write(b"PK\x03\x04 partial")
                raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4416 vs 4308")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fill_disk)
    assert main(["run", *DINO_TINY, *tiny, "optim.epochs=3", f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: No space left on device") and "\n" not in err
    monkeypatch.setattr(torch, "save", real)
    assert calls["n"] == 2 and not list(run_dir.glob(".*.tmp"))
    method = build_method(load_config(run_dir / "config.yaml"))
    assert load_checkpoint(run_dir / "checkpoint.pt", method, None)["epoch"] == 1


@pytest.mark.parametrize("text", ["{ not json", "[1, 2]", '"done"'])
def test_a_garbage_status_json_is_one_line_in_status(text, finished_run, tmp_path, capsys):
    (finished_run / "status.json").write_text(text)
    manifest = tmp_path / "sweep.json"
    manifest.write_text(json.dumps({"members": [{"run_dir": str(finished_run), "job_id": None}]}))
    for target in (finished_run, manifest):
        assert main(["status", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert "status.json" in err and "\n" not in err and "Traceback" not in err, err
    RunDir(finished_run).write_status(state="done")  # a launcher replaces it rather than failing
    assert RunDir(finished_run).read_status()["state"] == "done"


@pytest.mark.parametrize(
    "text", ["[1, 2]\n", "", "just text\n", "!!python/object/apply:os.system ['true']\n", "optim: {lrr: 1}\n"]
)
def test_a_garbage_config_yaml_is_one_line_on_resume_and_eval(text, finished_run, tiny, capsys):
    cfg = finished_run / "config.yaml"
    good = cfg.read_text()
    cfg.write_text(text if not text.startswith("optim") else good + text.replace("optim:", "extra_section:"))
    assert main(["eval", f"run={finished_run}"]) == 2, text
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "config.yaml" in err and "\n" not in err, (text, err)
    # resume trusts the checkpoint's own settings, not the folder's config.yaml, and writes that back
    assert main(["run", *DINO_TINY, *tiny, f"run_dir={finished_run}", "resume=auto"]) == 0, text
    import yaml

    written, before = yaml.safe_load(cfg.read_text()), yaml.safe_load(good)
    assert {**written, "resume": None} == {**before, "resume": None}
