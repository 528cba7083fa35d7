"""MoCo v2 (Chen et al. 2020, arXiv:2003.04297) and MoCo v3 (Chen, Xie, He, ICCV 2021, arXiv:2104.02057).

``moco`` is v2 (``method.version=3`` switches to v3); ``moco_v3`` is the same class with v3 as its
default, so each has recipes of its own (``configs/recipes/moco*/``).
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from ssl_bench import dist as D
from ssl_bench import schedules as S
from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig, bounded, choice
from ssl_bench.data.views import ViewSpec
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import (
    BackboneHead,
    Method,
    StepState,
    has_batchnorm,
    make_target,
    ring_enqueue,
    target_backbone_config,
)
from ssl_bench.registry import register_method


@dataclass
class MoCoConfig:
    """MoCo. ``None`` fields take the value of the version and backbone.

    v2 (reference ``moco/main_moco.py`` with ``--mlp --moco-t 0.2 --aug-plus --cos``): 2-layer projector
    2048 -> 128, EMA key encoder 0.999 (constant), queue 65536, temperature 0.2, one loss direction
    (query of view 1, key of view 2) and the N keys of the batch enqueued per step, shuffle-BN for BN
    backbones (``moco/builder.py`` ``_batch_shuffle_ddp``). ``symmetric=true`` is solo-learn's MoCo V2+:
    both directions, averaged, each against a queue of the other view's keys.

    v3 (reference ``moco-v3/moco/builder.py``): projector with BN (3 layers for ViTs, 2 for ResNets)
    4096 -> 256 whose last BN has no affine parameters, a 2-layer predictor, in-batch negatives over the
    global batch, loss scaled by 2T and summed over both directions, temperature 0.2 (ViT) / 1.0
    (ResNet), momentum 0.99 -> 1 (cosine). For ViTs the stability recipe (§4.2, ``vits.py``): a frozen
    random patch projection and a fixed 2-D sin-cos position embedding.
    """

    name: str = "moco"  # the registered method (method=NAME)
    version: int = choice(2, [2, 3])
    hidden_dim: Optional[int] = bounded(None, 1)  # 2048 (v2) / 4096 (v3)
    out_dim: Optional[int] = bounded(None, 1)  # 128 (v2) / 256 (v3)
    temperature: Optional[float] = None  # 0.2 (v2; v3 ViT) / 1.0 (v3 ResNet)
    proj_layers: Optional[int] = None  # 2 (v2; v3 ResNet) / 3 (v3 ViT)
    queue_size: int = 65536  # v2 only
    momentum: Optional[float] = None  # 0.999 (v2, constant) / 0.99 -> momentum_end cosine (v3)
    momentum_end: Optional[float] = None  # None: constant (v2) / 1.0 (v3)
    symmetric: bool = False  # v2: both loss directions (MoCo V2+), one queue per view
    shuffle_bn: bool = True  # v2 with a BN backbone: keys through shuffled sub-batches
    shuffle_bn_groups: int = 8  # one process: sub-batches standing for the reference's 8 GPUs
    loss_reduction: str = choice("sum", ["sum", "mean"])  # v3: sum over directions (reference) or mean
    vit_frozen_patch_embed: bool = True  # v3 ViT: stop-gradient on the patch projection
    vit_sincos_pos_embed: bool = True  # v3 ViT: fixed 2-D sin-cos position embedding
    # v3 ViT: timm's initialisation or vits.py:30-49 VisionTransformerMoCo's (xavier-uniform Linear layers,
    # Q, K and V each xavier-uniform, zero biases, cls token N(0, 1e-6), patch projection uniform
    # +-sqrt(6 / (3 p^2 + dim)) with zero bias)
    vit_init: str = choice("timm", ["timm", "moco_v3"])
    # v3: the predictor's last BatchNorm1d(affine=False); None: as builder.py:122/109 builds it, with it
    # for ViTs and without for ResNets
    predictor_last_bn: Optional[bool] = None
    # each view through the networks on its own (v3 builder.py forward, solo-learn's training_step: BatchNorm
    # statistics per view) instead of the views of one size as one batch
    bn_per_view: bool = False
    # after_step: the engine's EMA after each optimizer step with that step's momentum; before_forward:
    # builder.py forward updates the key encoder at the start of a step with that step's momentum, which
    # is the after-step EMA taking the next step's momentum (same arithmetic, one update fewer at the end)
    ema_timing: str = choice("after_step", ["after_step", "before_forward"])
    n_local: int = 0  # local crops per image (MoCo: two views only)

    def check(self) -> None:
        if self.queue_size < 1:
            raise ConfigError(f"bad value for 'method.queue_size': {self.queue_size}; must be >= 1")
        if self.shuffle_bn_groups < 1:
            raise ConfigError(f"bad value for 'method.shuffle_bn_groups': {self.shuffle_bn_groups}; must be >= 1")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"bad value for 'method.temperature': {self.temperature}; must be > 0")


@dataclass
class MoCoV3Config(MoCoConfig):
    name: str = "moco_v3"  # the registered method (method=NAME)
    version: int = choice(3, [2, 3])


class MoCoV3Projection(ProjectionHead):
    """MoCo v3's ``_build_mlp``: Linear (no bias) -> BN -> ReLU per hidden layer, a last Linear and a
    BN without affine parameters (the projector) or nothing (the predictor)."""

    def __init__(self, in_dim: int, hidden: int, out: int, layers: int, last_bn: bool) -> None:
        dims = [in_dim] + [hidden] * (layers - 1) + [out]
        blocks: list[tuple] = [
            (dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]), nn.ReLU(), False) for i in range(layers - 1)
        ]
        blocks.append((hidden, out, nn.BatchNorm1d(out, affine=False) if last_bn else None, None, False))
        super().__init__(blocks)


def sincos_pos_embed_(vit: Any, temperature: float = 10000.0) -> None:
    """MoCo v3's fixed 2-D sin-cos position embedding (``vits.py`` build_2d_sincos_position_embedding),
    written into a timm ViT's ``pos_embed`` (class token position zero) and frozen."""
    h, w = vit.patch_embed.grid_size
    dim = vit.embed_dim
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos position embedding needs embed_dim divisible by 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_w, out_h = grid_w.flatten()[:, None] * omega, grid_h.flatten()[:, None] * omega
    pe = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)[None]
    n_prefix = vit.pos_embed.shape[1] - pe.shape[1]
    pe = torch.cat([torch.zeros(1, n_prefix, dim), pe], dim=1)
    with torch.no_grad():
        vit.pos_embed.copy_(pe)
    vit.pos_embed.requires_grad_(False)


@torch.no_grad()
def moco_v3_vit_init_(vit: Any) -> None:
    """VisionTransformerMoCo's initialisation (moco-v3 vits.py:30-49) of a timm ViT's own layers."""
    for name, m in vit.named_modules():
        if isinstance(m, nn.Linear):
            if "qkv" in name:  # Q, K and V as three matrices
                val = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                nn.init.uniform_(m.weight, -val, val)
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(vit.cls_token, std=1e-6)
    proj = vit.patch_embed.proj
    val = math.sqrt(6.0 / float(3 * proj.kernel_size[0] * proj.kernel_size[1] + vit.embed_dim))
    nn.init.uniform_(proj.weight, -val, val)
    nn.init.zeros_(proj.bias)


@register_method("moco", config=MoCoConfig)
class MoCo(Method):
    """MoCo v2 (EMA key encoder + queue) or v3 (EMA key encoder + predictor, in-batch negatives)."""

    def __init__(self, cfg: MoCoConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg
        v3 = cfg.version == 3
        hidden = cfg.hidden_dim or (4096 if v3 else 2048)
        out = cfg.out_dim or (256 if v3 else 128)

        def build(bcfg: BackboneConfig) -> BackboneHead:
            bb = build_backbone(bcfg)
            if v3 and bb.is_vit:
                if cfg.vit_init == "moco_v3":
                    moco_v3_vit_init_(bb.model)
                if cfg.vit_sincos_pos_embed:
                    sincos_pos_embed_(bb.model)
                if cfg.vit_frozen_patch_embed:
                    bb.model.patch_embed.proj.requires_grad_(False)
            if v3:
                layers = cfg.proj_layers or (3 if bb.is_vit else 2)
                head = MoCoV3Projection(bb.embed_dim, hidden, out, layers, last_bn=True)
            else:
                head = MoCoProjectionHead(bb.embed_dim, hidden, out, num_layers=cfg.proj_layers or 2, batch_norm=False)
            return BackboneHead(bb, head)

        self.query = build(backbone_cfg)
        self.key = make_target(self.query, lambda: build(target_backbone_config(backbone_cfg)))
        vit = self.query.backbone.is_vit
        self.temperature = cfg.temperature or (0.2 if (vit or not v3) else 1.0)
        pred_bn = cfg.predictor_last_bn if cfg.predictor_last_bn is not None else vit
        self.predictor = MoCoV3Projection(out, hidden, out, 2, last_bn=pred_bn) if v3 else None
        self.shuffle = not v3 and cfg.shuffle_bn and has_batchnorm(self.query.backbone)
        if not v3:
            # Our own queue rather than lightly's MemoryBankModule: lightly keeps its bank out of the
            # state dict, and a resumed run must continue with the same negatives. Symmetric: one per view.
            n_queues = 2 if cfg.symmetric else 1
            self.register_buffer("queue", F.normalize(torch.randn(n_queues, cfg.queue_size, out), dim=-1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def sync_batchnorm(self) -> bool:
        """Shuffle-BN needs each process's own batch statistics (the reference has no SyncBN)."""
        return not self.shuffle

    def schedules(self) -> dict[str, S.Schedule]:
        v3 = self.cfg.version == 3
        start = self.cfg.momentum if self.cfg.momentum is not None else (0.99 if v3 else 0.999)
        end = self.cfg.momentum_end if self.cfg.momentum_end is not None else (1.0 if v3 else start)
        f = S.cosine(start, end, self.schedule_convention)
        if self.cfg.ema_timing == "before_forward":
            return {"momentum": lambda step, spe, total: f(step + 1, spe, total)}
        return {"momentum": f}

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.query, self.key)]

    def _q(self, x: Tensor) -> Tensor:
        z = self.query(x)
        return self.predictor(z) if self.predictor is not None else z

    def _forward_groups(self, fn, x: Tensor, shuffle: bool) -> Tensor:
        """``fn`` over sub-batches, each with its own BN statistics; with ``shuffle`` the samples are
        dealt to sub-batches in a random order and put back after (MoCo's shuffle-BN). Across
        processes (DDP) each process is one sub-batch and the shuffle spans the global batch."""
        if D.is_dist():
            if not shuffle:
                return fn(x)
            x_all = D.gather(x, with_grad=False)
            perm = D.broadcast(torch.randperm(x_all.shape[0], device=x.device))
            mine = perm.view(D.world_size(), -1)[D.rank()]
            out_all = D.gather(fn(x_all[mine]), with_grad=False)
            return out_all[torch.argsort(perm)].view(D.world_size(), -1, out_all.shape[-1])[D.rank()]
        g = min(self.cfg.shuffle_bn_groups, x.shape[0])
        if not shuffle:
            return torch.cat([fn(c) for c in x.chunk(g)])
        perm = torch.randperm(x.shape[0], device=x.device)
        out = torch.cat([fn(c) for c in x[perm].chunk(g)])
        return out[torch.argsort(perm)]

    def _contrast_v2(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ queue.clone().t()
        logits = torch.cat([pos, neg], 1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))

    def _contrast_v3(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        k_all = D.gather(k, with_grad=False)  # keys carry no gradient
        logits = q @ k_all.t() / self.temperature
        labels = torch.arange(q.shape[0], device=q.device) + D.rank() * q.shape[0]
        return F.cross_entropy(logits, labels) * 2 * self.temperature

    def _v2(self, views: list[Tensor]) -> Tensor:
        # reference (builder.py forward): only view 1 goes through the query encoder and only view 2
        # through the key encoder, so each BatchNorm's running statistics move once per step
        q_views, k_views = (views[:2], views[:2]) if self.cfg.symmetric else (views[:1], views[1:2])
        if self.shuffle:
            q = [self._forward_groups(self._q, v, shuffle=False) for v in q_views]
            with torch.no_grad():
                k = [self._forward_groups(self.key, v, shuffle=True) for v in k_views]
        else:
            q = self.forward_views(self._q, q_views)
            with torch.no_grad():
                k = self.forward_views(self.key, k_views)
        if self.cfg.symmetric:  # MoCo V2+: q1 against k2 and queue 1, q2 against k1 and queue 0
            loss = (self._contrast_v2(q[0], k[1], self.queue[1]) + self._contrast_v2(q[1], k[0], self.queue[0])) / 2
            self._enqueue(torch.stack(k))
        else:  # reference: query from view 1, its key from view 2, N keys enqueued
            loss = self._contrast_v2(q[0], k[0], self.queue[0])
            self._enqueue(k[0][None])
        return loss

    def _v3(self, views: list[Tensor]) -> Tensor:
        n_g = self.view_spec().n_global
        q = self.forward_views(self._q, views)
        with torch.no_grad():
            k = self.forward_views(self.key, views[:n_g])
        pairs = [(v, g) for v in range(len(q)) for g in range(n_g) if v != g]
        loss = functools.reduce(operator.add, (self._contrast_v3(q[v], k[g]) for v, g in pairs))  # sum's order
        return loss / len(pairs) if self.cfg.loss_reduction == "mean" else loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """``keys`` (queues, N, D): each queue gets the (gathered) keys of its view."""
        keys = torch.stack([D.gather(F.normalize(k, dim=1), with_grad=False) for k in keys])
        ring_enqueue(self.queue, self.queue_ptr, keys)

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        return {"loss": self._v3(views) if self.cfg.version == 3 else self._v2(views)}

    def encoder(self) -> nn.Module:
        return self.query.backbone


register_method("moco_v3", config=MoCoV3Config)(MoCo)
