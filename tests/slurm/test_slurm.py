"""Against a real one-node SLURM cluster (slurm/local_cluster.sh, started by the README's test
command): a 2-task DDP job equals a 1-process run, a requeued job resumes from its checkpoint with one
result, and a sweep becomes a job array that status and report follow."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.pause import PAUSE_ENV
from ssl_bench.engine.train import train
from ssl_bench.errors import UserError
from ssl_bench.slurm.submit import parse_time_minutes, slurm_job_state, submit_run, wait_for
from tests.conftest import DINO_TINY

needs_cluster = pytest.mark.usefixtures("slurm_cluster")

TINY_RUN = [
    *DINO_TINY,
    "backbone.img_size=16",
    "backbone.depth=1",
    "data.local_size=8",
    "optim.batch_size=16",
    "progress=false",
    "eval.baseline=false",
    "data.num_workers=0",
]


def _state(run_dir):
    return torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)["method"]


def _step(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["step"]
    except (OSError, RuntimeError, EOFError):  # replaced while we read it
        return -1


def test_parse_time():
    assert parse_time_minutes("72:00:00") == 72 * 60
    assert parse_time_minutes("1-00:00:00") == 1440
    assert parse_time_minutes("30") == 30 and parse_time_minutes("00:00:30") == 1
    with pytest.raises(UserError, match="cluster.time"):
        parse_time_minutes("soon")


def test_missing_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    cfg = build_config(TINY_RUN + ["launcher=slurm", f"results_root={tmp_path / 'runs'}"])
    with pytest.raises(UserError, match="sbatch"):
        submit_run(cfg)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slurm
@needs_cluster
def test_bad_partition_and_impossible_request_leave_nothing(tmp_path):
    for over in (["cluster.partition=nosuchpart"], ["cluster.nodes=5"], ["cluster.mem=900G"]):
        cfg = build_config(TINY_RUN + ["launcher=slurm", "cluster=local", *over, f"results_root={tmp_path / 'runs'}"])
        with pytest.raises(UserError, match="sbatch refused the job"):
            submit_run(cfg)
        assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slurm
@needs_cluster
def test_two_task_ddp_job_equals_one_process(tmp_path):
    t0 = time.time()
    job, run = submit_run(
        build_config(TINY_RUN + ["optim.epochs=2", "launcher=slurm", "cluster=local", f"run_dir={tmp_path / 'slurm'}"])
    )
    assert wait_for(job, run, poll_s=0.5) == 0
    status = json.loads((run.path / "status.json").read_text())
    assert status["world_size"] == 2 and status["state"] == "done"
    print(f"submit-to-start {status['started'] - status['submitted']:.1f}s, submit-to-done {time.time() - t0:.1f}s")
    train(build_config(TINY_RUN + ["optim.epochs=2", f"run_dir={tmp_path / 'local'}"]))
    a, b = _state(tmp_path / "local"), _state(tmp_path / "slurm")
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"max |w_2proc - w_1proc| = {worst:.2e}")
    assert worst < 1e-4  # Adam turns float-rounding gradient differences into ~1e-5 weight differences
    m1 = {(r["eval"], r["metric"]): r["value"] for r in json.loads((tmp_path / "local" / "metrics.json").read_text())}
    m2 = {(r["eval"], r["metric"]): r["value"] for r in json.loads((tmp_path / "slurm" / "metrics.json").read_text())}
    assert m1[("knn", "top1")] == m2[("knn", "top1")]


@pytest.mark.slurm
@needs_cluster
def test_requeued_job_resumes_with_one_result(tmp_path, monkeypatch):
    epochs, pause_step = 4, 4  # 5 steps per epoch: the job pauses mid-epoch 1, right after its step-4 checkpoint
    # crops drawn batched (data.augment=device, seeded per step): a third of the time of per-image PIL crops
    # here; resuming the PIL loader mid-epoch is covered in-process by tests/engine/test_engine.py
    fast = ["data.augment=device"]
    release = tmp_path / "release"
    # The job waits after step 4 until `release` exists (sbatch passes the environment on), so the requeue
    # always lands mid-training, whatever the machine's speed: no race with the job.
    monkeypatch.setenv(PAUSE_ENV, f"{pause_step}:{release}")
    cfg = build_config(
        TINY_RUN
        + fast
        + [
            f"optim.epochs={epochs}",
            "checkpoint_every_steps=2",
            "launcher=slurm",
            "cluster=local",
            "cluster.tasks_per_node=1",
            f"run_dir={tmp_path / 'rq'}",
        ]
    )
    job, run = submit_run(cfg)
    deadline = time.time() + 300
    while not (run.has_checkpoint() and _step(run.checkpoint) == pause_step):
        assert time.time() < deadline, "the job did not reach its pause point"
        assert slurm_job_state(job.job_id) in ("PENDING", "RUNNING", "CONFIGURING"), "the job ended early"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True)
    # `release` is never written while the job lives: the requeue's SIGTERM ends the paused process (exit
    # 143; submitit itself ignores SIGTERM); the requeued job resumes at step 4 and, the pause being after
    # step 4 only, trains on.
    # SLURM holds a requeued job back (Reason=BeginTime, about 2 minutes); once it is pending again,
    # let it start now, as a preempted job on a busy cluster would when resources free up.
    deadline = time.time() + 120
    seen_pending = False
    while time.time() < deadline:
        state = slurm_job_state(job.job_id)
        if state == "PENDING":
            seen_pending = True
            subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], capture_output=True)
        elif seen_pending:  # running again (or already done)
            break
        time.sleep(0.5)
    assert seen_pending, "the requeued job never became pending again"
    assert wait_for(job, run, poll_s=0.5) == 0
    release.touch()
    status = json.loads((run.path / "status.json").read_text())
    assert status["requeues"] >= 1
    rows = json.loads((run.path / "metrics.json").read_text())
    keys = [(r["eval"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # exactly one result row per metric
    assert dict(zip(keys, [r["value"] for r in rows]))[("slurm", "requeues")] >= 1
    log = [json.loads(ln) for ln in (run.path / "train.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, epochs + 1))
    # the requeued run ends exactly where an uninterrupted run ends
    monkeypatch.delenv(PAUSE_ENV)
    train(build_config(TINY_RUN + fast + [f"optim.epochs={epochs}", f"run_dir={tmp_path / 'ref'}"]))
    a, b = _state(tmp_path / "ref"), _state(run.path)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slurm
@needs_cluster
def test_sweep_is_a_job_array_that_status_and_report_follow(tmp_path):
    env = {**os.environ}
    cmd = [sys.executable, "-m", "ssl_bench"]
    r = subprocess.run(
        cmd
        + [
            "sweep",
            *TINY_RUN,
            "optim.epochs=1",
            "seed=0,1,2",
            "launcher=slurm",
            "cluster=local",
            "cluster.tasks_per_node=1",
            f"results_root={tmp_path / 'results' / 'runs'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "as job array" in r.stdout
    manifest_path = next((tmp_path / "results" / "sweeps").glob("*.json"))
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["members"]) == 3
    assert len({m["job_id"].split("_")[0] for m in manifest["members"]}) == 1  # one array job
    assert all("_" in m["job_id"] for m in manifest["members"])
    deadline = time.time() + 300
    while True:
        out = subprocess.run(cmd + ["status", str(manifest_path)], capture_output=True, text=True, cwd=tmp_path).stdout
        if "3 done" in out or time.time() > deadline:
            break
        time.sleep(1)
    assert "3 done" in out, out
    rep = subprocess.run(
        cmd
        + ["report", f"results_root={tmp_path / 'results' / 'runs'}", "columns=knn/top1", f"out={tmp_path / 'tables'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert rep.returncode == 0 and "(n=3)" in rep.stdout, rep.stdout + rep.stderr


@pytest.mark.slurm
@needs_cluster
def test_ablate_uses_the_sweep_path_on_slurm(tmp_path):
    from ssl_bench.__main__ import main

    over = [o for o in TINY_RUN if not o.startswith("method=")] + [
        "optim.epochs=1",
        "launcher=slurm",
        "cluster=local",
        "cluster.tasks_per_node=1",
        f"results_root={tmp_path / 'results' / 'runs'}",
        f"out={tmp_path / 'out'}",
    ]
    assert main(["ablate", "dino", *over]) == 0
    manifest = json.loads(next((tmp_path / "results" / "sweeps").glob("*.json")).read_text())
    assert len(manifest["members"]) == 4 and len({m["job_id"].split("_")[0] for m in manifest["members"]}) == 1
    assert (tmp_path / "out" / "ablation_dino.png").stat().st_size > 1000
