"""``launcher=local nproc=N``: DDP on this machine (one process per GPU, or N CPU processes on gloo)."""
from __future__ import annotations

import os
import socket
from dataclasses import replace

import torch

from ssl_bench.config import RunConfig
from ssl_bench.results import RunDir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: RunConfig) -> None:
    import torch.distributed as dist

    from ssl_bench.engine.train import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
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

    from ssl_bench.engine.train import RunResult
    from ssl_bench.slurm.submit import fresh_run_dir

    cfg = fresh_run_dir(cfg)
    mp.spawn(_worker, args=(cfg.nproc, _free_port(), cfg), nprocs=cfg.nproc, join=True)
    run = RunDir(cfg.run_dir)
    return RunResult(run, run.read_metrics())
