"""torch.distributed helpers: the engine calls these, so single-process runs need no branches."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity when not distributed)."""
    if is_dist():
        t = t.clone()
        dist.all_reduce(t)
        t /= world_size()
    return t
