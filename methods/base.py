"""The method contract. A method is an ``nn.Module`` with one required call and optional hooks.

The engine owns optimisers, devices, logging, checkpoints and distribution; a method only says how
to turn a batch of views into a loss (plus what to EMA-update and which schedules it needs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ssl_bench.data.views import ViewSpec
from ssl_bench.schedules import Schedule


@dataclass
class StepState:
    """What the engine tells a method about the current step; ``values`` holds evaluated schedules."""

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    values: dict[str, float] = field(default_factory=dict)


class Method(nn.Module):
    """Base with defaults for every hook and nothing else."""

    def __init__(self, view_spec: ViewSpec) -> None:
        super().__init__()
        self._view_spec = view_spec
        self.schedule_convention = "endpoints"

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        """Return a dict holding ``"loss"``; every other scalar in it is logged."""
        raise NotImplementedError

    def view_spec(self) -> ViewSpec:
        """Crops this method trains on (globals first, then locals)."""
        return self._view_spec

    def configure_views(self, spec: ViewSpec) -> None:
        """The engine sets the crops the data layer will deliver (``data.n_local`` overrides the default)."""
        self._view_spec = spec

    def forward_views(self, fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
        """``fn`` over the crops: one pass per run of same-size crops (:func:`multicrop_forward`), or one per
        crop with ``method.bn_per_view`` (each view's own BatchNorm statistics, as moco-v3's builder and
        solo-learn's training_step forward them)."""
        if getattr(getattr(self, "cfg", None), "bn_per_view", False):
            return [fn(v) for v in views]
        return multicrop_forward(fn, views)

    def configure_schedules(self, convention: str) -> None:
        """The engine sets ``optim.schedule_convention``; ``schedules()`` builds with it."""
        self.schedule_convention = convention

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) pairs the engine updates with the ``momentum`` schedule."""
        return []

    def schedules(self) -> dict[str, Schedule]:
        """Named per-step schedules; ``momentum`` drives the EMA of ``ema_pairs``."""
        return {}

    def lr_multipliers(self) -> dict[str, float]:
        """Sub-module name -> factor on the scheduled LR for its parameters (e.g. a faster predictor)."""
        return {}

    def after_backward(self, state: StepState) -> None:
        """Called after backward, before clipping and the optimiser step."""

    def after_step(self, state: StepState) -> None:
        """Called after the optimiser step and the EMA update."""

    def encoder(self) -> nn.Module:
        """The backbone the evaluations use."""
        raise NotImplementedError

    def sync_batchnorm(self) -> bool:
        """Whether DDP runs use global-batch BatchNorm (False: each process its own statistics)."""
        return True

    def collapsed(self, epoch_metrics: dict[str, float]) -> Optional[bool]:
        """Whether the logged metrics of the last epoch show collapse (None: not diagnosed)."""
        return None


class BackboneHead(nn.Module):
    """``head(backbone(x))``: the online/target network shape shared by DINO, BYOL and MoCo."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def multicrop_forward(fn: Callable[[Tensor], Tensor], views: Sequence[Tensor]) -> list[Tensor]:
    """One forward per run of same-resolution crops (DINO's MultiCropWrapper), split back per crop."""
    outs: list[Tensor] = []
    i = 0
    while i < len(views):
        j = i
        while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
            j += 1
        outs.extend(fn(torch.cat(list(views[i:j]))).chunk(j - i))
        i = j
    return outs


@torch.no_grad()
def ring_enqueue(queue: Tensor, ptr: Tensor, items: Tensor) -> int:
    """Write ``items`` (N, D) into the ring buffer ``queue`` (..., L, D) at ``ptr`` (last dim L slots),
    keeping the newest when N > L; casts to the queue's dtype (bf16 under autocast). Returns how many
    were written. Shared by the MoCo v2 key queue and the SwAV feature queue."""
    size = queue.shape[-2]
    n = min(items.shape[-2], size)
    idx = (ptr + torch.arange(n, device=items.device)) % size
    queue[..., idx, :] = items[..., -n:, :].to(queue.dtype)
    ptr.copy_((ptr + n) % size)
    return n


def target_backbone_config(cfg: Any) -> Any:
    """The backbone config of a target network (DINO teacher, BYOL target, MoCo key encoder): its
    stochastic depth is ``target_drop_path_rate`` (0, as in the references, whose targets run in
    train mode without drop path)."""
    if hasattr(cfg, "target_drop_path_rate"):
        return replace(cfg, drop_path_rate=cfg.target_drop_path_rate)
    return cfg


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def make_target(online: nn.Module, builder: Callable[[], nn.Module]) -> nn.Module:
    """A frozen copy of ``online`` built fresh and loaded from its state dict (deepcopy breaks on
    lightly's weight-normed heads)."""
    target = builder()
    target.load_state_dict(online.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    return target
