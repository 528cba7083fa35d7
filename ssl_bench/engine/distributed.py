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


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward returns each rank its slice of the summed gradient, so gradients
    flow through the local part (as in SimCLR / MoCo v3 multi-GPU code)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        g = torch.stack(grads)
        dist.all_reduce(g)
        return g[dist.get_rank()]


def gather(x: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (identity when not distributed)."""
    if not is_dist():
        return x
    if with_grad:
        return torch.cat(_GatherWithGrad.apply(x), 0)
    out = [torch.zeros_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out, 0)
