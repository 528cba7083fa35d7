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
    one), which lightly lacks and the CIFAR recipes use."""

    def __init__(self, params, lr: float, clip_lr: bool = False, **kwargs) -> None:
        super().__init__(params, lr=lr, **kwargs)
        for g in self.param_groups:
            g.setdefault("clip_lr", clip_lr)

    @torch.no_grad()
    def step(self, closure=None):
        if not any(g["clip_lr"] for g in self.param_groups):
            return super().step(closure)
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            wd, mom, lr = group["weight_decay"], group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if wd != 0:
                    p_norm, g_norm = torch.norm(p), torch.norm(d_p)
                    trust = group["trust_coefficient"] * p_norm / (g_norm + p_norm * wd + group["eps"])
                    if group["clip_lr"] and lr > 0:
                        trust = torch.clamp(trust / lr, max=1.0)
                    ok = (p_norm > 0) & (g_norm > 0)  # as the references: no adaptation for a zero norm
                    d_p = torch.where(ok, d_p.add(p, alpha=wd) * trust, d_p)
                if mom != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(mom).add_(d_p, alpha=1 - group["dampening"])
                    d_p = d_p.add(buf, alpha=mom) if group["nesterov"] else buf
                p.add_(d_p, alpha=-lr)
        return loss


def param_groups(module: nn.Module) -> list[dict]:
    """No weight decay (and no LARS adaptation) on biases and norm parameters (DINO's
    ``get_params_groups``, SimCLR/BYOL's exclusions); parameters under a prefix of the method's
    ``lr_multipliers()`` get their own groups whose LR follows the schedule times ``lr_mult``."""
    mults: dict[str, float] = getattr(module, "lr_multipliers", dict)()
    groups: dict[tuple[bool, float], list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for prefix, m in mults.items() if name == prefix or name.startswith(prefix + ".")), 1.0)
        groups.setdefault((p.ndim > 1 and not name.endswith(".bias"), mult), []).append(p)
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
    groups = param_groups(method)
    if o.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=o.momentum, nesterov=o.nesterov)
    if o.optimizer == "lars":
        return LARS(
            groups,
            lr=0.0,
            momentum=o.momentum,
            nesterov=o.nesterov,
            trust_coefficient=o.lars_eta,
            clip_lr=o.lars_clip_lr,
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
