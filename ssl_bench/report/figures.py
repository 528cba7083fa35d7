"""``python -m ssl_bench plot [KIND] [filters]``: draw figures from the results folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ssl_bench.config import load_config
from ssl_bench.data.datasets import run_datasets
from ssl_bench.data.masks import MaskPairs, square_resize
from ssl_bench.engine.checkpoint import load_checkpoint
from ssl_bench.engine.setup import build_method
from ssl_bench.errors import UserError
from ssl_bench.evals.segmentation import seg_resolution
from ssl_bench.report import plots
from ssl_bench.report.tables import apply_filters
from ssl_bench.results import RunDir, load_train_logs

log = logging.getLogger(__name__)

KINDS = ["bar", "knn_curve", "loss", "attention", "all"]


def filtered_logs(root: str, filters: dict[str, str]):
    """Per-epoch logs of the runs the filters select (a filter on eval/metric concerns the metrics only)."""
    logs = load_train_logs(root)
    if logs.empty:
        return logs
    return apply_filters(logs, {k: v for k, v in filters.items() if k not in ("eval", "metric")}, "plot")


@torch.no_grad()
def attention_for_run(run_dir: str, out_dir: str, n_images: int = 4, seg_root: str | None = None) -> list[Path]:
    """Each head's last-block CLS attention for the first images of the run's seg set (or test set)."""

    run = RunDir(run_dir)
    if not run.has_checkpoint():
        raise UserError(f"run={run_dir!r} has no checkpoint.pt to draw attention from")
    cfg = load_config(run.path / "config.yaml")
    method = build_method(cfg)
    load_checkpoint(run.checkpoint, method, None)
    enc = method.encoder().eval()
    if not getattr(enc, "is_vit", False):
        raise UserError(f"attention maps need a ViT backbone; run {run.run_id} uses {cfg.backbone.name}")
    splits = run_datasets(cfg)
    root = seg_root or cfg.eval.seg_root

    size = seg_resolution(cfg.eval.seg_size, enc)
    pairs = MaskPairs(root) if root else None
    images, maps = [], []
    for i in range(n_images):
        img = pairs[i][0] if pairs else splits.test[i * max(1, len(splits.test) // n_images)][0]
        x, _ = square_resize(img, np.zeros((img.size[1], img.size[0]), bool), size, splits.mean, splits.std)
        att = enc.last_attention(x[None])[0, :, 0, 1:]
        h = size // enc.patch_size
        att = F.interpolate(att.reshape(1, -1, h, h), size=(size, size), mode="nearest")[0]
        images.append(np.array(img.resize((size, size))))
        maps.append(att.numpy())
    return plots.attention_grid(images, maps, out_dir, name=f"attention_{run.run_id}")
