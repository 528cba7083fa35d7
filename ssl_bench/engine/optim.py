"""Optimisers of the recipes: AdamW (DINO, MoCo v3 ViT), SGD with momentum (MoCo v2), LARS (SimCLR,
BYOL, SwAV, MoCo v3 ResNet and solo-learn's CIFAR recipes), the LR batch-scaling rules and gradient
clipping (one global norm, or DINO's per parameter)."""

from __future__ import annotations

import math

import torch
from lightly.utils.lars import LARS as _LightlyLARS
from torch import nn

from ssl_bench.config import OptimConfig


class LARS(_LightlyLARS):
    """lightly's LARS (parameters with weight decay 0, i.e. biases and norms here, are excluded from
    the adaptation and the decay, as in the SimCLR and BYOL references) plus solo-learn's ``clip_lr``
    (solo/utils/lars.py: the adapted LR ``eta * |w| / (|g| + wd |w|)`` never exceeds the scheduled
    one), which lightly lacks and the CIFAR recipes use.

    The step is lightly's, computed for all parameters of a group at once (``torch._foreach_*``: norms,
    decay, momentum and update as a few multi-tensor kernels) instead of a Python loop over parameters, and
    without reading any norm on the host: lightly's ``if p_norm != 0 and g_norm != 0`` waits for the GPU
    twice per parameter and step (ResNet-50: ~110 waits a step). Equal to lightly's step (test)."""

    def __init__(
        self, params, lr: float, clip_lr: bool = False, trust: str = "sum", momentum_lr: str = "after", **kwargs
    ) -> None:
        super().__init__(params, lr=lr, **kwargs)
        for g in self.param_groups:
            g.setdefault("clip_lr", clip_lr)
            g.setdefault("trust", trust)
            g.setdefault("momentum_lr", momentum_lr)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            wd, mom, lr = group["weight_decay"], group["momentum"], group["lr"]
            d = grads
            if wd != 0 and group["trust"] == "update":  # moco-v3: eta |w| / |g + wd w|, decay always applied
                d = torch._foreach_add(grads, params, alpha=wd)
                p_norm = torch.stack(torch._foreach_norm(params))
                u_norm = torch.stack(torch._foreach_norm(d))
                trust = group["trust_coefficient"] * p_norm / u_norm.clamp_min(torch.finfo(u_norm.dtype).tiny)
                torch._foreach_mul_(d, list(torch.where((p_norm > 0) & (u_norm > 0), trust, 1.0).unbind()))
            elif wd != 0:
                p_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                trust = group["trust_coefficient"] * p_norm / (g_norm + p_norm * wd + group["eps"])
                if group["clip_lr"] and lr > 0:
                    trust = torch.clamp(trust / lr, max=1.0)
                ok = (p_norm > 0) & (g_norm > 0)  # as the references: no adaptation, no decay for a zero norm
                # d = trust * (g + wd * w) where ok, else g: per-parameter factors, no branch on the host
                d = torch._foreach_mul(grads, list(torch.where(ok, trust, 1.0).unbind()))
                torch._foreach_add_(d, torch._foreach_mul(params, list(torch.where(ok, trust * wd, 0.0).unbind())))
            inside = group["momentum_lr"] == "inside"  # SimCLR: the buffer accumulates lr * d
            if inside:
                d = torch._foreach_mul(d, lr)
            if mom != 0:
                states = [self.state[p] for p in params]
                old = [i for i, st in enumerate(states) if "momentum_buffer" in st]
                if old:
                    bufs = [states[i]["momentum_buffer"] for i in old]
                    torch._foreach_mul_(bufs, mom)
                    torch._foreach_add_(bufs, [d[i] for i in old], alpha=1 - group["dampening"])
                for i, st in enumerate(states):
                    if "momentum_buffer" not in st:
                        st["momentum_buffer"] = torch.clone(d[i]).detach()
                bufs = [st["momentum_buffer"] for st in states]
                d = torch._foreach_add(d, bufs, alpha=mom) if group["nesterov"] else bufs
            torch._foreach_add_(params, d, alpha=-1.0 if inside else -lr)
        return loss


def param_groups(module: nn.Module, decay_all: bool = False) -> list[dict]:
    """No weight decay (and no LARS adaptation) on biases and norm parameters (DINO's
    ``get_params_groups``, SimCLR/BYOL's exclusions), unless ``decay_all`` (MoCo v2/v3: every
    parameter); parameters under a prefix of the method's ``lr_multipliers()`` get their own groups
    whose LR follows the schedule times ``lr_mult``."""
    mults: dict[str, float] = getattr(module, "lr_multipliers", dict)()
    groups: dict[tuple[bool, float], list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for prefix, m in mults.items() if name == prefix or name.startswith(prefix + ".")), 1.0)
        groups.setdefault((decay_all or (p.ndim > 1 and not name.endswith(".bias")), mult), []).append(p)
    out = []
    for regularize in (True, False):
        for (reg, mult), params in groups.items():
            if reg == regularize:
                out.append(
                    {"params": params, "regularize": reg, "lr_mult": mult, **({} if reg else {"weight_decay": 0.0})}
                )
    return out


def make_optimizer(o: OptimConfig, method: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``method``'s trainable parameters; the engine sets LR and weight
    decay every step from the schedules."""
    groups = param_groups(method, o.decay_norm_and_bias)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=o.momentum, nesterov=o.nesterov, foreach=True)
    if o.optimizer == "lars":
        return LARS(
            groups,
            lr=0.0,
            momentum=o.momentum,
            nesterov=o.nesterov,
            trust_coefficient=o.lars_eta,
            clip_lr=o.lars_clip_lr,
            trust=o.lars_trust,
            momentum_lr=o.lars_momentum_lr,
        )
    beta1, beta2 = o.betas
    return torch.optim.AdamW(groups, lr=0.0, betas=(beta1, beta2), foreach=True)


def peak_lr(o: OptimConfig) -> float:
    """The run's peak LR from the base LR and the global batch (``optim.lr_scaling``)."""
    if o.lr_scaling == "linear":
        return o.lr * o.batch_size / 256.0
    if o.lr_scaling == "sqrt":
        return o.lr * math.sqrt(o.batch_size)
    return o.lr


@torch.no_grad()
def clip_gradients(params: list[torch.Tensor], max_norm: float, mode: str) -> None:
    """``global``: one norm over all gradients (``clip_grad_norm_``); ``param``: each parameter's
    gradient scaled to at most ``max_norm`` on its own (DINO ``utils.clip_gradients``: coefficient
    ``max_norm / (norm + 1e-6)`` where below 1). No host sync either way."""
    if mode == "global":
        torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    coefs = [torch.clamp(max_norm / (n + 1e-6), max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)
