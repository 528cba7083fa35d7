import json
import subprocess
import sys

import pytest
import torch

from ssl_bench.__main__ import main
from ssl_bench.config import build_config
from ssl_bench.engine.train import train
from ssl_bench.errors import UserError
from tests.conftest import DINO_TINY, killed_after_checkpoint


def test_readme_run_command_on_embedded_default(tiny, capsys, tmp_path):
    """The README's first command, shortened: same entry point, embedded digits, k-NN vs random init."""
    rc = main(["run", "method=dino", "optim.epochs=1", "data.train_per_class=20", *tiny])
    assert rc == 0
    out = capsys.readouterr().out
    assert "knn top-1 (dino, vit_tiny, digits)" in out and "random init" in out
    run = next((tmp_path / "runs").iterdir())
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "train.jsonl", "metrics.json", "checkpoint.pt"}
    rows = json.loads((run / "metrics.json").read_text())
    vals = {(r["eval"], r["metric"]): r["value"] for r in rows}
    assert 0 <= vals[("knn", "top1")] <= 1 and 0 <= vals[("knn@init", "top1")] <= 1
    log = [json.loads(ln) for ln in (run / "train.jsonl").read_text().splitlines()]
    assert len(log) == 1 and {"loss", "teacher_entropy", "teacher_mean_entropy", "kl"} <= set(log[0])


def _final_state(run_dir):
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return ckpt["method"], ckpt["optimizer"]["state"]


@pytest.mark.parametrize("augment", ["loader", "device"])
def test_resume_equals_uninterrupted(tiny, tmp_path, monkeypatch, augment):
    """Killed right after the epoch-1 checkpoint, resumed with resume=auto: the same weights, loss
    center, optimiser state and metrics as one uninterrupted run (crops drawn per image in the loader,
    or per batch on the device)."""
    common = tiny + DINO_TINY + ["optim.epochs=2", "eval.baseline=false", f"data.augment={augment}"]
    full = train(build_config(common + [f"run_dir={tmp_path / 'full'}"]))
    with killed_after_checkpoint(monkeypatch, lambda epoch, step: epoch == 1):
        train(build_config(common + [f"run_dir={tmp_path / 'part'}"]))
    assert torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train(build_config(common + [f"run_dir={tmp_path / 'part'}", "resume=auto"]))
    a, oa = _final_state(tmp_path / "full")
    b, ob = _final_state(tmp_path / "part")
    assert a.keys() == b.keys() and "criterion.center" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)
    la = [json.loads(ln) for ln in (tmp_path / "full" / "train.jsonl").read_text().splitlines()]
    lb = [json.loads(ln) for ln in (tmp_path / "part" / "train.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb] and len(lb) == 2
    ma = {(r["eval"], r["metric"]): r["value"] for r in full.metrics if r["eval"] == "knn"}
    mb = {(r["eval"], r["metric"]): r["value"] for r in resumed.metrics if r["eval"] == "knn"}
    assert ma == mb


def test_existing_run_dir_without_resume_is_refused(tiny, tmp_path):
    cfg = build_config(tiny + DINO_TINY + ["optim.epochs=1", f"run_dir={tmp_path / 'r'}", "eval.evals=[]"])
    train(cfg)
    with pytest.raises(UserError, match="resume=auto"):
        train(cfg)


def test_bad_data_leaves_no_run_folder(tiny, tmp_path, image_folder):
    (image_folder / "train" / "class1" / "003.png").write_bytes(b"garbage")
    cfg = build_config(
        tiny + DINO_TINY + ["preset=default", "dataset=imagefolder", f"data.root={image_folder}", "optim.batch_size=4"]
    )
    with pytest.raises(UserError, match="003.png"):
        train(cfg)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ssl_bench", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_bad_key_is_one_line_error(tmp_path):
    r = _cli("run", "method=dino", "optim.lrr=1", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown config key 'optim.lrr'; did you mean 'optim.lr'?"
    assert not (tmp_path / "results").exists()


def test_cli_corrupt_image_error_names_file(tmp_path, image_folder):
    (image_folder / "train" / "class0" / "002.png").write_bytes(b"garbage")
    r = _cli(
        "run",
        "preset=default",
        "dataset=imagefolder",
        f"data.root={image_folder}",
        "optim.batch_size=4",
        "data.num_workers=1",
        "backbone.img_size=16",
        "backbone.depth=1",
        "progress=false",
        cwd=tmp_path,
    )
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot read image file") and "002.png" in last
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())


def test_cli_list(tmp_path):
    r = _cli("list", cwd=tmp_path)
    assert r.returncode == 0
    for name in ("dino", "vit_tiny", "resnet18", "cifar10", "digits", "knn", "cifar10-cpu"):
        assert name in r.stdout


def test_mid_epoch_resume_with_loader_worker_equals_uninterrupted(tiny, tmp_path, monkeypatch):
    """checkpoint_every_steps: killed mid-epoch, resumed from the step checkpoint, with a loader
    worker: per-sample augmentation seeds make the continuation exact."""
    common = tiny + DINO_TINY + ["optim.epochs=2", "eval.evals=[]", "checkpoint_every_steps=3", "data.num_workers=1"]
    train(build_config(common + [f"run_dir={tmp_path / 'full'}"]))
    with killed_after_checkpoint(monkeypatch, lambda epoch, step: step == 3):  # a preemption mid-epoch
        train(build_config(common + [f"run_dir={tmp_path / 'part'}"]))
    ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert (ck["epoch"], ck["step"]) == (0, 3)  # inside the first of two 5-step epochs
    train(build_config(common + [f"run_dir={tmp_path / 'part'}", "resume=auto"]))
    a, _ = _final_state(tmp_path / "full")
    b, _ = _final_state(tmp_path / "part")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [json.loads(ln) for ln in (tmp_path / "full" / "train.jsonl").read_text().splitlines()]
    lb = [json.loads(ln) for ln in (tmp_path / "part" / "train.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-6)


def test_cli_sigterm_before_first_checkpoint_leaves_no_run_folder(tmp_path):
    """A run killed with SIGTERM (scheduler, `kill`) before its first checkpoint exits 143 and removes its
    folder, like Ctrl-C; nothing half-written stays under results/."""
    import signal
    import time

    runs = tmp_path / "results" / "runs"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ssl_bench",
            "run",
            "method=simclr",
            "dataset=digits",
            "optim.batch_size=2",
            "backbone.img_size=16",
            "backbone.depth=1",
            "data.num_workers=0",
            "progress=false",
            "eval.baseline=false",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(runs.glob("*/config.yaml")):
        time.sleep(0.05)
    assert list(runs.glob("*/config.yaml")), "the run never started"
    assert not list(runs.glob("*/checkpoint.pt")), "the run checkpointed before the signal; make its epoch longer"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not any(runs.iterdir())


def test_random_init_baseline_is_computed_once_per_weights_and_eval_settings(tiny, caplog):
    """Two runs in one process whose backbones start from the same weights (same seed, other method and
    crops) share the @init rows; another eval setting or another seed computes them afresh."""
    import logging

    from ssl_bench.engine import baselines

    baselines.clear()
    caplog.set_level(logging.INFO, logger="ssl_bench.engine.baselines")

    def init_rows(*extra):
        caplog.clear()
        res = train(build_config(tiny + ["optim.epochs=1", "data.train_per_class=4", "data.test_per_class=4", *extra]))
        reused = any("baseline" in r.getMessage() and "reused" in r.getMessage() for r in caplog.records)
        return {(r["eval"], r["metric"]): r["value"] for r in res.metrics if r["eval"].endswith("@init")}, reused

    a, reused_a = init_rows("method=dino", "data.n_local=2")
    b, reused_b = init_rows("method=byol", "data.n_local=0")
    assert a and not reused_a and reused_b and a == b
    _, reused_c = init_rows("method=byol", "eval.knn_k=[3]")
    _, reused_d = init_rows("method=byol", "seed=1")
    assert not reused_c and not reused_d
    # the cached rows are what a fresh computation gives
    baselines.clear()
    fresh, reused_e = init_rows("method=byol", "data.n_local=0")
    assert not reused_e and fresh == a


def test_a_run_below_random_init_says_so(tiny, capsys, monkeypatch):
    """The last lines of `run` warn when the trained k-NN is below the random-init row (here a random-init
    row of 1.0, which no trained run reaches)."""
    from ssl_bench.engine import baselines

    monkeypatch.setattr(
        baselines, "get_or_compute", lambda key, compute: [{"eval": "knn@init", "metric": "top1", "value": 1.0}]
    )
    assert main(["run", "method=dino", "optim.epochs=1", "data.train_per_class=8", "data.test_per_class=4", *tiny]) == 0
    out = capsys.readouterr().out
    assert "warning: knn top-1 is below the same backbone at random initialisation" in out
