"""Frozen-encoder feature extraction shared by the evaluations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ssl_bench.config import RunConfig
from ssl_bench.data.datasets import DataSplits, EvalImage, TransformDataset, normalize_batch, targets_of
from ssl_bench.dist import is_main
from ssl_bench.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class EvalContext:
    """What an evaluation needs besides the encoder."""

    cfg: RunConfig
    splits: DataSplits
    device: torch.device
    cache: Optional[dict] = None  # features keyed by (split, encoder id) within one eval call


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset,
    size: int,
    mean,
    std,
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 0,
    crop_fraction: float = 1.0,
    interpolation: str = "bilinear",
    progress: bool = False,
    desc: str = "features",
) -> tuple[Tensor, Tensor]:
    """(N, D) float features and (N,) labels, no augmentation, encoder in eval mode. Images travel
    as uint8 and are normalised per batch on ``device``."""
    was_training = encoder.training
    encoder.eval()
    ds = TransformDataset(dataset, EvalImage(size, crop_fraction, interpolation))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, mininterval=2.0)
    feats = [encoder(normalize_batch(x.to(device, non_blocking=True), mean, std)).float().cpu() for x, _ in bar]
    encoder.train(was_training)
    return torch.cat(feats), torch.tensor(targets_of(dataset))


def split_features(encoder: nn.Module, ctx: EvalContext) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Train (bank) and test features of ``encoder`` on the run's dataset, cached per context."""
    key = id(encoder)
    if ctx.cache is not None and key in ctx.cache:
        return ctx.cache[key]
    cfg = ctx.cfg
    size = cfg.data.global_size or cfg.backbone.img_size
    args = (
        size,
        ctx.splits.mean,
        ctx.splits.std,
        ctx.device,
        cfg.eval.batch_size,
        cfg.data.num_workers,
        cfg.eval.crop_fraction,
        cfg.eval.interpolation,
    )
    show = bool(cfg.progress and is_main())
    xtr, ytr = extract_features(encoder, ctx.splits.bank, *args, progress=show, desc="features: train")
    xte, yte = extract_features(encoder, ctx.splits.test, *args, progress=show, desc="features: test")
    bad = int((~torch.isfinite(xtr)).any(1).sum() + (~torch.isfinite(xte)).any(1).sum())
    if bad:
        raise UserError(
            f"the encoder's features hold NaN or inf for {bad} of {len(xtr) + len(xte)} images (its weights "
            "diverged); refusing to score them"
        )
    out = (xtr, ytr, xte, yte)
    if ctx.cache is not None:
        ctx.cache[key] = out
    return out
