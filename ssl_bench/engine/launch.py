"""Starting runs: :func:`launch` is the one entry that ``run``, ``sweep`` and ``ablate`` use. It submits to
SLURM (``launcher=slurm``: one job, or one job array for several runs) or trains here (``launcher=local``:
one process, ``nproc=N`` DDP processes on this machine, or the processes torchrun / srun started)."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ssl_bench.config import RunConfig
from ssl_bench.engine.setup import RunResult
from ssl_bench.engine.train import train
from ssl_bench.errors import UserError
from ssl_bench.results import RunDir, fresh_run_dir, unique_run_dirs
from ssl_bench.slurm.submit import submit_array, submit_run

log = logging.getLogger(__name__)


@dataclass
class Launched:
    """One started run: its folder, and its SLURM job (``launcher=slurm``) or its result (trained here;
    ``result.metrics`` is empty on a process that is not rank 0)."""

    run: RunDir
    job: Any = None
    result: Any = None
    main: bool = True  # this process reports (rank 0 of a torchrun / srun group)

    @property
    def job_id(self) -> str | None:
        return str(self.job.job_id) if self.job is not None else None


def plan(cfgs: list[RunConfig]) -> list[RunConfig]:
    """Every run's folder decided before anything starts (one unique folder per run)."""
    return unique_run_dirs([fresh_run_dir(c) for c in cfgs])


def launch(
    cfgs: list[RunConfig],
    array_folder: str | Path | None = None,
    on_start: Callable[[int, RunConfig], None] | None = None,
) -> list[Launched]:
    """Start ``cfgs`` (all with the same launcher). SLURM: a single run is one job (logs in its folder),
    several are one job array (submitit's files under ``array_folder``); returns at once. Local: the runs
    train one after the other in this process (``on_start(i, cfg)`` before each) and return with results."""
    if cfgs[0].launcher == "slurm":
        if len(cfgs) == 1 and array_folder is None:
            job, run = submit_run(cfgs[0])
            return [Launched(run, job=job)]
        return [Launched(run, job=job) for job, run in submit_array(plan(cfgs), array_folder or ".")]
    out = []
    for i, cfg in enumerate(cfgs):
        if on_start is not None:
            on_start(i, cfg)
        result, main = run_here(cfg)
        out.append(Launched(result.run_dir, result=result, main=main))
    return out


def run_here(cfg: RunConfig):
    """Train one run on this machine: joining the processes torchrun / srun started, as ``nproc`` spawned DDP
    processes, or in this process. Returns (RunResult, whether this process is rank 0)."""

    if env_launch():
        if cfg.nproc > 1:
            raise UserError(
                f"nproc={cfg.nproc} inside a {env_launch()} launch: the processes are already started; drop nproc"
            )
        return run_env_group(cfg)
    if cfg.nproc > 1:
        return run_local_ddp(cfg), True
    return train(cfg), True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: RunConfig) -> None:
    import torch.distributed as dist

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(max(1, (cfg.threads or os.cpu_count() or 1) // world))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        train(replace(cfg, progress=cfg.progress and rank == 0))
    finally:
        dist.destroy_process_group()


def run_local_ddp(cfg: RunConfig):
    """Spawn ``cfg.nproc`` processes; returns the run's RunResult (metrics from rank 0's files)."""
    import torch.multiprocessing as mp

    cfg = fresh_run_dir(cfg)
    mp.spawn(_worker, args=(cfg.nproc, _free_port(), cfg), nprocs=cfg.nproc, join=True)
    run = RunDir(str(cfg.run_dir))  # fresh_run_dir set it
    return RunResult(run, run.read_metrics())


def env_launch() -> str | None:
    """'torchrun' or 'srun' when this process is one of several that torchrun or a plain ``srun -n N`` started
    (RANK / WORLD_SIZE from torchrun; SLURM_PROCID / SLURM_STEP_NUM_TASKS from srun, which a batch script's own
    step lacks), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        return "torchrun"
    if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "srun"
    return None


def run_env_group(cfg: RunConfig):
    """Join the process group the environment describes (torchrun, srun) and train one run together: rank 0
    picks the run folder and tells the others. Returns (RunResult, is_main)."""
    import torch.distributed as dist

    kind = env_launch()
    if kind == "srun":  # RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from the SLURM step (submitit's parser)
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    os.environ["SSL_BENCH_LAUNCH"] = kind or "local"
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    else:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", "1")).split("(")[0])
        torch.set_num_threads(max(1, (cfg.threads or os.cpu_count() or 1) // max(per_node, 1)))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    try:
        holder = [fresh_run_dir(cfg).run_dir if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(holder, src=0)  # strings between our own processes
        main = dist.get_rank() == 0
        result = train(replace(cfg, run_dir=holder[0], progress=cfg.progress and main))
        return result, main
    finally:
        dist.destroy_process_group()
