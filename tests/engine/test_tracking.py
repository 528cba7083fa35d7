"""What a run records besides its metrics (provenance, TensorBoard), fp16 with a gradient scaler, and
runs whose processes torchrun started."""

import json
import subprocess
import sys

import pytest
import torch

from ssl_bench.__main__ import main
from ssl_bench.engine.checkpoint import read_checkpoint
from ssl_bench.results import RunDir
from tests.conftest import TINY, killed_after_checkpoint

SMALL = [
    "method=simclr",
    "method.out_dim=16",
    "method.hidden_dim=32",
    "optim.epochs=2",
    "data.train_per_class=16",
    "data.test_per_class=4",
    "evals=knn",
]


def _only_run(root):
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return RunDir(runs[0])


def test_run_records_commit_packages_and_hardware(tmp_path):
    assert main(["run", *SMALL, *TINY, f"results_root={tmp_path}"]) == 0
    prov = json.loads((_only_run(tmp_path).path / "provenance.json").read_text())
    assert len(prov) == 1
    p = prov[0]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert p["git"]["commit"] == head and isinstance(p["git"]["dirty"], bool)
    assert p["packages"]["torch"] == torch.__version__.split("+")[0] or p["packages"]["torch"] == torch.__version__
    assert p["packages"]["timm"] and p["device"] == "cpu" and p["cpu"] and p["world_size"] == 1
    assert p["launch"] == "local"


def test_tensorboard_scalars_per_step_and_per_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["run", *SMALL, *TINY, "log.tensorboard=true", "log.every_steps=1", f"results_root={tmp_path}"]) == 0
    run = _only_run(tmp_path)
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    steps = [e.step for e in acc.Scalars("step/loss")]
    assert steps == list(range(1, 21))  # 16 images x 10 digit classes / batch 16 = 10 steps an epoch, 2 epochs
    assert [e.step for e in acc.Scalars("epoch/loss")] == [1, 2]
    assert {"step/lr", "step/wd", "epoch/images_per_s"} <= set(tags)
    logged = [r["loss"] for r in run.read_train_log()]
    assert [e.value for e in acc.Scalars("epoch/loss")] == pytest.approx(logged)


def test_fp16_trains_with_a_grad_scaler_and_resumes_it(tmp_path, monkeypatch, caplog):
    """precision=fp16: the loss is scaled and the scaler's state is in the checkpoint (tensors only); a run
    killed after epoch 1 and resumed ends with the same weights and the same scale as an uninterrupted one."""
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import train

    common = [*SMALL, *TINY, "precision=fp16", "device=cpu", "eval.baseline=false", "evals="]
    import ssl_bench.engine.step as step

    monkeypatch.setattr(step, "_WARNED", [])
    with caplog.at_level("WARNING", logger="ssl_bench.engine.step"):
        train(build_config(common + [f"run_dir={tmp_path / 'full'}"]))
    # fp16 on a CPU says once that it is slow there
    assert sum("precision=fp16 on a CPU" in r.getMessage() for r in caplog.records) == 1
    with killed_after_checkpoint(monkeypatch, lambda epoch, step: epoch == 1):
        train(build_config(common + [f"run_dir={tmp_path / 'part'}"]))
    train(build_config(common + [f"run_dir={tmp_path / 'part'}", "resume=auto"]))
    assert sum("precision=fp16 on a CPU" in r.getMessage() for r in caplog.records) == 1
    a, b = (read_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("full", "part"))
    assert a["extra"]["scaler"]["scale"] > 0 and a["extra"]["scaler"] == b["extra"]["scaler"]
    assert all(torch.equal(a["method"][k], b["method"][k]) for k in a["method"])
    assert all(abs(r["loss"]) < 1e4 for r in RunDir(tmp_path / "full").read_train_log())


def test_torchrun_processes_join_one_run(tmp_path):
    """`torchrun --nproc_per_node=2 -m ssl_bench run ...` is one 2-process run (one folder, world size 2 in its
    provenance), and trains the same as `nproc=2` through the suite's own launcher."""
    args = [*SMALL, *TINY, "optim.epochs=1", "device=cpu"]
    tr = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "ssl_bench",
            "run",
            *args,
            f"results_root={tmp_path / 'torchrun'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert tr.returncode == 0, tr.stderr[-3000:]
    run = _only_run(tmp_path / "torchrun")
    prov = json.loads((run.path / "provenance.json").read_text())
    assert [p["world_size"] for p in prov] == [1 * 2] and prov[0]["launch"] == "torchrun"
    assert tr.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert main(["run", *args, "nproc=2", f"results_root={tmp_path / 'spawn'}"]) == 0
    ref = _only_run(tmp_path / "spawn")
    assert [r["loss"] for r in run.read_train_log()] == pytest.approx(
        [r["loss"] for r in ref.read_train_log()], rel=1e-5
    )


def test_srun_environment_is_detected(monkeypatch):
    from ssl_bench.engine.launch import env_launch

    for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    assert env_launch() is None
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "2")  # a batch script's own step: not a multi-process launch
    assert env_launch() is None
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    assert env_launch() == "srun"


def test_tensorboard_gets_the_settings_as_hparams_with_the_final_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["run", *SMALL, *TINY, "log.tensorboard=true", "evals=knn", f"results_root={tmp_path}"]) == 0
    run = _only_run(tmp_path)
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    final = {r["eval"] + "/" + r["metric"]: r["value"] for r in run.read_metrics()}
    assert [e.value for e in acc.Scalars("final/knn/top1")] == pytest.approx([final["knn/top1"]])
    blob = b"".join(acc.PluginTagToContent("hparams").values())
    assert b"optim.lr" in blob and b"method.name" in blob


def test_wandb_offline_run_holds_scalars_config_and_final_metrics(tmp_path):
    """`log.wandb=true log.wandb_offline=true`: a W&B run under the run folder, for `wandb sync`, holding the
    per-step and per-epoch scalars, the resolved config and the final k-NN as its summary."""
    pytest.importorskip("wandb", reason="wandb is installed by the test extra: pip install -e '.[test]'")
    args = ["run", *SMALL, *TINY, "log.wandb=true", "log.wandb_offline=true", "log.every_steps=5", "evals=knn"]
    assert main([*args, f"results_root={tmp_path}"]) == 0
    run = _only_run(tmp_path)
    (record,) = (run.path / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()  # protobuf records: their keys and JSON values are plain bytes in the file
    for key in (b"step/loss", b"step/lr", b"epoch/loss", b"optim.lr", b"method.name", b"knn/top1"):
        assert key in data, key
    final = {r["eval"] + "/" + r["metric"]: r["value"] for r in run.read_metrics()}
    assert repr(final["knn/top1"]).encode() in data
