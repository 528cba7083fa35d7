"""The engine's one optimisation step (schedules, autocast, backward, gradient all-reduce, clipping,
optimizer, EMA), shared by the training loop and the benchmarks."""

from __future__ import annotations

import logging

import torch

from ssl_bench import dist as D
from ssl_bench import schedules as S
from ssl_bench.config import OptimConfig, RunConfig
from ssl_bench.data.datasets import normalize_batch
from ssl_bench.data.device_aug import DeviceMultiCrop
from ssl_bench.data.loader import mix_seeds
from ssl_bench.data.multicrop import crop_policy
from ssl_bench.engine.optim import clip_gradients, peak_lr
from ssl_bench.engine.setup import compile_backbones
from ssl_bench.methods.base import Method, StepState

log = logging.getLogger(__name__)
_WARNED: list[str] = []


@torch.no_grad()
def ema_update(pairs: list[tuple[list[torch.Tensor], list[torch.Tensor]]], momentum: float) -> None:
    """target <- m * target + (1 - m) * online, one fused foreach call per pair."""
    for online, target in pairs:
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1.0 - momentum)


def device_normalizer(mean, std, dev: torch.device):
    """uint8 (B, C, H, W) crops -> normalised float on ``dev`` (``data.normalize_on_device``): the
    evaluation path's :func:`~ssl_bench.data.datasets.normalize_batch`, the loader's per-crop arithmetic."""

    m, s = (torch.tensor(t, dtype=torch.float32, device=dev) for t in (mean, std))  # once, not per step
    return lambda v: normalize_batch(v.to(dev), m, s)


def device_augmenter(cfg: RunConfig, mean_std: tuple | None, dev: torch.device):
    """The batched on-device multi-crop of ``data.augment=device`` (same policy as the loader's)."""

    if mean_std is None:
        raise ValueError("data.augment=device needs make_train_step(..., mean_std=(mean, std))")
    return DeviceMultiCrop(crop_policy(cfg.data), *mean_std).to(dev)


def optim_schedules(o: OptimConfig) -> tuple[S.Schedule, S.Schedule]:
    """The LR and weight-decay schedules of ``optim``: warm-up + cosine from the peak LR, cosine weight
    decay, in the recipe's convention and unit."""
    lr = S.warmup_cosine(peak_lr(o), o.min_lr, o.warmup_epochs, o.warmup_start_lr, o.schedule_convention)
    wd = S.cosine(o.weight_decay, o.weight_decay_end, o.schedule_convention)
    return S.with_unit(lr, o.schedule_unit), S.with_unit(wd, o.schedule_unit)


def make_train_step(
    cfg: RunConfig,
    method: Method,
    opt: torch.optim.Optimizer,
    spe: int,
    dev: torch.device,
    mean_std: tuple | None = None,
):
    """The engine's one optimisation step as a function of (views, step, epoch): schedules, forward
    under autocast, backward, method hooks, gradient all-reduce, clipping, AdamW, EMA. ``_train`` and
    ``benchmarks/throughput.py`` both call it, so the benchmark times exactly the engine's step.
    uint8 views (``data.normalize_on_device``) are normalised on ``dev`` with ``mean_std``; with
    ``data.augment=device`` the views arrive as one uint8 image batch and every crop is drawn here."""
    total = spe * cfg.optim.epochs
    lr_s, wd_s = optim_schedules(cfg.optim)
    scheds = method.schedules()
    params = [p for p in method.parameters() if p.requires_grad]
    pairs = [(list(o.parameters()), list(t.parameters())) for o, t in method.ema_pairs()]
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    # fp16 overflows where bf16 does not: scale the loss, skip steps with inf/NaN gradients (DINO's fp16_scaler)
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
    if cfg.precision == "fp16" and dev.type == "cpu" and not _WARNED:
        _WARNED.append("fp16-cpu")  # once per process
        log.warning(
            "precision=fp16 on a CPU: its half-precision kernels are slow there (many times slower than fp32); "
            "precision=fp32 or bf16 for CPU runs, fp16 for GPUs"
        )
    norm = device_normalizer(mean_std[0], mean_std[1], dev) if mean_std is not None else None
    if cfg.compile:
        compile_backbones(method)
    aug = device_augmenter(cfg, mean_std, dev) if cfg.data.augment == "device" else None
    rank = D.rank()

    def train_step(views, step: int, epoch: int):
        if isinstance(views, torch.Tensor):  # data.augment=device: one uint8 image batch
            if aug is None:
                raise ValueError("an image batch (not a list of crops) needs data.augment=device and mean_std")
            views = aug(views.to(dev, non_blocking=True), mix_seeds(cfg.seed, step, rank, 11))
        views = [v.to(dev, non_blocking=True) for v in views]
        if views[0].dtype == torch.uint8:
            if norm is None:
                raise ValueError("uint8 crops need make_train_step(..., mean_std=(mean, std))")
            views = [norm(v) for v in views]
        values = {name: f(step, spe, total) for name, f in scheds.items()}
        state = StepState(step, epoch, spe, total, values)
        cur_lr, cur_wd = lr_s(step, spe, total), wd_s(step, spe, total)
        for g in opt.param_groups:
            g["lr"] = cur_lr * g.get("lr_mult", 1.0)
            if g["regularize"]:
                g["weight_decay"] = cur_wd
        with torch.autocast(dev.type, dtype=half or torch.bfloat16, enabled=half is not None):
            out = method.training_step(views, state)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        method.after_backward(state)
        D.all_reduce_grads(params)
        if cfg.optim.clip_grad > 0:
            scaler.unscale_(opt)
            clip_gradients(params, cfg.optim.clip_grad, cfg.optim.clip_mode)
        scaler.step(opt)
        scaler.update()
        if pairs:
            ema_update(pairs, values["momentum"])
        method.after_step(state)
        return out, values, cur_lr, cur_wd

    setattr(train_step, "scaler", scaler)  # its state goes into checkpoints (fp16)
    return train_step
