"""Submit runs and sweeps to SLURM with submitit (the DINO reference's launcher), and run DDP on
one machine with ``launcher=local nproc=N``.

Each job runs :class:`TrainJob`: submitit's ``TorchDistributedEnvironment`` exports RANK,
WORLD_SIZE, MASTER_ADDR/PORT from the SLURM environment; the process group is NCCL on GPUs and gloo
on CPU-only nodes. On the time limit or preemption submitit calls ``checkpoint()``, which requeues
the same job; it resumes from the run's last checkpoint (``resume=auto``), so at most
``checkpoint_every_steps`` steps (or one epoch) of training are redone. ``status.json`` in the run
folder records the state, the SLURM job id and the requeue count.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path

import torch

from ssl_bench.config import RunConfig, to_yaml
from ssl_bench.engine.train import train
from ssl_bench.errors import UserError
from ssl_bench.results import RunDir, fresh_run_dir  # noqa: F401 (re-exported)
from ssl_bench.slurm.status import slurm_job_state  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


def parse_time_minutes(value: str) -> int:
    """SLURM time ``[D-]HH:MM:SS``, ``HH:MM`` or minutes -> minutes (rounded up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(value).strip())
    if not m:
        raise UserError(f"bad value for 'cluster.time': {value!r}; use [D-]HH:MM:SS, HH:MM:SS or minutes")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if b is None:
        minutes = a + (d or 0) * 1440
    elif c is None:  # HH:MM
        minutes = (d or 0) * 1440 + a * 60 + b
    else:
        minutes = (d or 0) * 1440 + a * 60 + b + (1 if c else 0)
    if minutes <= 0:
        raise UserError(f"bad value for 'cluster.time': {value!r}; must be at least one minute")
    return minutes


def write_status(run_dir: str | Path, **fields) -> None:
    RunDir(run_dir).write_status(**fields)


class TrainJob:
    """The callable submitit pickles: one training process of a (possibly multi-node) run."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def __call__(self) -> list[dict]:
        import submitit
        import torch.distributed as dist

        env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cuda = torch.cuda.is_available() and self.cfg.device != "cpu"
        if env.world_size > 1:
            if cuda:
                torch.cuda.set_device(env.local_rank)
            dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
        requeues = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", ""))
        main = env.rank == 0
        if main:
            write_status(
                self.cfg.run_dir,
                state="running",
                job_id=job_id,
                requeues=requeues,
                host=socket.gethostname(),
                world_size=env.world_size,
                started=time.time(),
            )
        try:
            result = train(replace(self.cfg, resume="auto", launcher="local", progress=False))
            if main:
                result.run_dir.write_metrics([{"eval": "slurm", "metric": "requeues", "value": float(requeues)}])
                write_status(self.cfg.run_dir, state="done")
            return result.metrics
        except Exception as err:
            if main:
                write_status(self.cfg.run_dir, state="failed", error=f"{type(err).__name__}: {err}"[:2000])
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    def checkpoint(self, *args, **kwargs):
        """Time limit or preemption: requeue this job; it resumes from the last checkpoint."""
        import submitit

        log.warning("job interrupted: requeueing %s (resume=auto)", self.cfg.run_dir)
        return submitit.helpers.DelayedSubmission(TrainJob(self.cfg))


def make_executor(cfg: RunConfig, folder: str | Path):
    import submitit

    if shutil.which("sbatch") is None:
        raise UserError(
            "launcher=slurm needs SLURM's sbatch on PATH (none found); use launcher=local, or start "
            "slurm/local_cluster.sh and export SLURM_CONF"
        )
    c = cfg.cluster
    gpus = c.gpus_per_node
    params = dict(
        nodes=c.nodes,
        tasks_per_node=gpus or c.tasks_per_node,
        cpus_per_task=c.cpus_per_task,
        timeout_min=parse_time_minutes(c.time),
        slurm_signal_delay_s=60,
        name=f"ssl-bench-{cfg.method.name}",
    )
    if gpus:
        params["gpus_per_node"] = gpus
    optional = {
        "slurm_partition": c.partition,
        "slurm_mem": c.mem,
        "slurm_account": c.account,
        "slurm_qos": c.qos,
        "slurm_constraint": c.constraint,
        "slurm_exclude": c.exclude,
        "slurm_comment": c.comment,
    }
    params.update({k: v for k, v in optional.items() if v})
    extra = {}
    for item in c.extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"bad cluster.extra entry {item!r}: expected key=value (an sbatch flag without --)")
        extra[key.lstrip("-")] = value
    if extra:
        params["slurm_additional_parameters"] = extra
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm", slurm_max_num_timeout=c.max_requeues)
    ex.update_parameters(**params)
    return ex


def _sbatch_error(err: Exception) -> UserError:
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()]
    msg = lines[-1] if lines else text.strip().splitlines()[-1] if text.strip() else type(err).__name__
    msg = re.sub(r"^.*?sbatch: error: ", "", msg)
    return UserError(f"sbatch refused the job: {msg}")


def submit_run(cfg: RunConfig):
    """Submit one run; nothing is left behind if sbatch refuses it. Returns (job, run_dir)."""
    cfg = fresh_run_dir(cfg)
    run = RunDir(cfg.run_dir)
    if run.holds_run() and cfg.resume != "auto":
        run.create()  # the refusal, one line
    folder = Path(cfg.cluster.log_dir or run.path / "slurm")
    ex = make_executor(cfg, folder)
    created = run.create(resume=cfg.resume == "auto")
    try:
        run.write_config(to_yaml(cfg))
        job = ex.submit(TrainJob(cfg))
    except Exception as err:
        if created:
            shutil.rmtree(run.path, ignore_errors=True)
        if isinstance(err, UserError):
            raise
        raise _sbatch_error(err) from None
    write_status(run.path, state="pending", job_id=str(job.job_id), requeues=0, submitted=time.time())
    return job, run


def submit_array(cfgs: list[RunConfig], folder: str | Path):
    """Submit many runs as one SLURM job array; returns [(job, run_dir)]."""
    cfgs = [fresh_run_dir(c) for c in cfgs]
    runs = [RunDir(c.run_dir) for c in cfgs]
    for r in runs:
        if r.holds_run():
            r.create()  # the refusal, one line
    ex = make_executor(cfgs[0], folder)
    try:
        for c, r in zip(cfgs, runs):
            r.create()
            r.write_config(to_yaml(c))
        with ex.batch():
            jobs = [ex.submit(TrainJob(c)) for c in cfgs]
    except Exception as err:
        for r in runs:
            shutil.rmtree(r.path, ignore_errors=True)
        if isinstance(err, UserError):
            raise
        raise _sbatch_error(err) from None
    for j, r in zip(jobs, runs):
        write_status(r.path, state="pending", job_id=str(j.job_id), requeues=0, submitted=time.time())
    return list(zip(jobs, runs))


def wait_for(job, run: RunDir, poll_s: float = 2.0, stream=None) -> int:
    """Block until the job finishes, streaming new log lines; 0 if the run is done."""
    import sys

    stream = stream or sys.stderr
    seen = 0
    while True:
        status = run.read_status()
        log_path = Path(job.paths.stderr) if job.paths.stderr else None
        if log_path and log_path.is_file():
            lines = log_path.read_text(errors="replace").splitlines()
            for line in lines[seen:]:
                print(line, file=stream)
            seen = len(lines)
        if status.get("state") in ("done", "failed"):
            return 0 if status["state"] == "done" else 1
        state = slurm_job_state(str(job.job_id))
        if state is not None and state not in ("RUNNING", "PENDING", "REQUEUED", "COMPLETING", "CONFIGURING"):
            time.sleep(poll_s)  # the job has ended: give status.json a moment, then decide
            status = run.read_status()
            return 0 if status.get("state") == "done" else 1
        time.sleep(poll_s)
