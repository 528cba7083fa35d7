"""Segmentation from frozen features.

``seg``: two metrics on image + binary mask pairs (``eval.seg_root``: a folder with images/ and
masks/, or ``voc`` for torchvision's PASCAL VOC 2012 val, any object = foreground):

1. Attention-mask Jaccard (ViT only; DINO §4.2, App. D): the last block's CLS-to-patch attention per
   head; keep the smallest set of patches holding ``eval.seg_mass`` (60%) of the attention mass,
   upsample that patch mask (nearest) to the image, Jaccard with the foreground. Reported: the best
   head (the head with the highest mean over images) and the mask from the head-averaged attention.
2. Linear patch probe mIoU (any backbone): logistic regression on frozen patch / feature-map
   features predicts foreground per patch (label = majority of the mask under the patch), trained
   on the first ``eval.seg_train_fraction`` of the sorted pairs, evaluated on the rest; the patch
   prediction is upsampled to the mask and mIoU is the mean of foreground and background IoU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_bench.data.masks import MaskPairs, VOCForeground, square_resize
from ssl_bench.errors import UserError
from ssl_bench.evals.features import EvalContext
from ssl_bench.registry import register_eval


def attention_mass_mask(attn: Tensor, mass: float = 0.6) -> Tensor:
    """Boolean mask over the last dim keeping the smallest set of entries that hold ``mass`` of the
    (normalised) attention: DINO's ``cumval > 1 - threshold`` on ascending sorted values."""
    val, idx = torch.sort(attn, dim=-1)
    val = val / val.sum(dim=-1, keepdim=True)
    keep_sorted = torch.cumsum(val, dim=-1) > (1 - mass)
    keep = torch.zeros_like(keep_sorted)
    return keep.scatter(-1, idx, keep_sorted)


def jaccard(pred: Tensor, target: Tensor) -> float:
    """|pred ∩ target| / |pred ∪ target| (1.0 when both are empty)."""
    pred, target = pred.bool(), target.bool()
    union = (pred | target).sum().item()
    return 1.0 if union == 0 else (pred & target).sum().item() / union


def miou(pred: Tensor, target: Tensor) -> float:
    """Mean of foreground IoU and background IoU."""
    return 0.5 * (jaccard(pred, target) + jaccard(~pred.bool(), ~target.bool()))


def _upsample(mask_hw: Tensor, size: int) -> Tensor:
    return F.interpolate(mask_hw[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5


def seg_pairs(cfg):
    """The (image, mask) pairs of ``eval.seg_root``: a folder of images/ + masks/, or ``voc:PATH``."""
    root = cfg.eval.seg_root
    if not root:
        raise UserError("the seg eval needs eval.seg_root=PATH (images/ + masks/ folder) or eval.seg_root=voc:PATH")
    if root.startswith("voc:"):
        return VOCForeground(root[4:], download=cfg.data.download)
    return MaskPairs(root)


@torch.no_grad()
def attention_jaccard(encoder: nn.Module, pairs, size: int, mean, std, mass: float, device) -> dict[str, float]:
    per_head, avg = [], []
    patch = encoder.patch_size
    for i in range(len(pairs)):
        img, mask = pairs[i]
        x, m = square_resize(img, mask, size, mean, std)
        attn = encoder.last_attention(x[None].to(device))[0, :, 0, 1:].float().cpu()  # heads x patches
        h = size // patch
        keep = attention_mass_mask(attn, mass).reshape(-1, h, h)
        per_head.append([jaccard(_upsample(k, size), m) for k in keep])
        avg_keep = attention_mass_mask(attn.mean(0), mass).reshape(h, h)
        avg.append(jaccard(_upsample(avg_keep, size), m))
    per_head_mean = np.mean(per_head, axis=0)
    return {
        "jaccard_best_head": float(per_head_mean.max()),
        "jaccard_mean_heads": float(np.mean(avg)),
        "best_head": float(per_head_mean.argmax()),
    }


@torch.no_grad()
def _patch_data(encoder: nn.Module, pairs, idx, size, mean, std, device):
    feats, labels, masks = [], [], []
    for i in idx:
        img, mask = pairs[i]
        x, m = square_resize(img, mask, size, mean, std)
        f = encoder.patch_features(x[None].to(device))[0].float().cpu()  # h x w x D
        h, w = f.shape[:2]
        lab = F.adaptive_avg_pool2d(m[None, None].float(), (h, w))[0, 0] > 0.5
        feats.append(f.reshape(h * w, -1))
        labels.append(lab.reshape(-1))
        masks.append(m)
    return feats, labels, masks, (h, w)


def linear_patch_miou(encoder: nn.Module, pairs, size: int, mean, std, train_fraction: float, device) -> float:
    n = len(pairs)
    n_train = max(1, min(n - 1, int(round(n * train_fraction))))
    ftr, ltr, _, _ = _patch_data(encoder, pairs, range(n_train), size, mean, std, device)
    fte, _, mte, (h, w) = _patch_data(encoder, pairs, range(n_train, n), size, mean, std, device)
    x, y = torch.cat(ftr).numpy(), torch.cat(ltr).numpy()
    mu, sd = x.mean(0), x.std(0) + 1e-6
    if len(np.unique(y)) < 2:
        raise UserError("linear patch probe: the training masks hold only one class at this eval.seg_size")
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced").fit((x - mu) / sd, y)
    scores = []
    for f, m in zip(fte, mte):
        pred = torch.from_numpy(clf.predict(((f.numpy() - mu) / sd))).reshape(h, w)
        scores.append(miou(_upsample(pred, size), m))
    return float(np.mean(scores))


def seg_resolution(size: int | None, encoder: nn.Module) -> int:
    """``eval.seg_size``, or by default 14 patches a side for a ViT (DINO's attention maps: 224 px at
    /16) and 224 px for other backbones."""
    if size is not None:
        return size
    return 14 * encoder.patch_size if getattr(encoder, "is_vit", False) else 224


@register_eval("seg")
def seg_eval(encoder: nn.Module, ctx: EvalContext) -> list[dict]:
    """Attention-mask Jaccard (ViT) and linear patch probe mIoU on image + mask pairs."""
    cfg = ctx.cfg
    pairs = seg_pairs(ctx.cfg)
    size, mean, std = seg_resolution(cfg.eval.seg_size, encoder), ctx.splits.mean, ctx.splits.std
    patch = getattr(encoder, "patch_size", 1)
    if size % patch:
        raise UserError(f"eval.seg_size={size} must be a multiple of the patch size {patch}")
    was = encoder.training
    encoder.eval()
    rows = []
    if getattr(encoder, "is_vit", False):
        res = attention_jaccard(encoder, pairs, size, mean, std, cfg.eval.seg_mass, ctx.device)
        rows += [{"eval": "seg", "metric": k, "value": v} for k, v in res.items()]
    rows.append(
        {
            "eval": "seg",
            "metric": "patch_probe_miou",
            "value": linear_patch_miou(encoder, pairs, size, mean, std, cfg.eval.seg_train_fraction, ctx.device),
        }
    )
    encoder.train(was)
    return rows
