"""Building a run: the resolved config, the device, the seeded method (the same seed always gives the
same initial weights) and its distributed / compiled form."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ssl_bench import dist as D
from ssl_bench.backbones import Backbone
from ssl_bench.config import RunConfig, resolve
from ssl_bench.data.views import ViewSpec
from ssl_bench.engine.allocator import keep_freed_memory
from ssl_bench.errors import UserError
from ssl_bench.methods.base import Method
from ssl_bench.registry import METHODS
from ssl_bench.results import RunDir

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: RunDir
    metrics: list[dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; valid here: auto, cpu")
    return torch.device(name)


def build_method(cfg: RunConfig) -> Method:
    """Seed, then build the method: the same seed always gives the same initial weights."""
    seed_everything(cfg.seed)
    method = METHODS.get(cfg.method.name).obj(cfg.method, cfg.backbone)
    method.configure_views(ViewSpec(cfg.data.n_global, cfg.data.n_local or 0))  # resolved: never None here
    method.configure_schedules(cfg.optim.schedule_convention)
    return method


def prepare_distributed(method: Method, device: torch.device) -> Method:
    """Global-batch BatchNorm when running on several processes (no-op otherwise)."""
    return D.convert_sync_batchnorm(method, device) if D.is_dist() and method.sync_batchnorm() else method


def compile_backbones(method: nn.Module) -> int:
    """``torch.compile`` every backbone of ``method`` in place (``Module.compile``: parameters and
    state-dict keys unchanged, so checkpoints load either way). Returns how many were compiled."""

    found = [m for m in method.modules() if isinstance(m, Backbone)]
    for m in found:
        m.compile()
    return len(found)


def prepare_process(cfg: RunConfig) -> RunConfig:
    """The resolved config, with this process's threads, determinism and allocator set from it."""

    cfg = resolve(cfg)
    if cfg.threads > 0:
        cores = os.cpu_count() or 1
        if cfg.threads > cores and D.is_main():  # oversubscribed threads spin against each other
            log.warning(
                "threads=%d exceeds the %d CPU cores here: compute threads will wait on each other "
                "(threads=0 uses every core)",
                cfg.threads,
                cores,
            )
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.keep_cpu_memory:
        keep_freed_memory()
    return cfg
