"""MoCo v2 (Chen et al. 2020, arXiv:2003.04297) and MoCo v3 (Chen, Xie, He, ICCV 2021, arXiv:2104.02057)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from lightly.models.modules import BYOLPredictionHead, MoCoProjectionHead
from torch import Tensor, nn

from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig, choice
from ssl_bench.data.multicrop import ViewSpec
from ssl_bench.engine import distributed as D
from ssl_bench.engine import schedules as S
from ssl_bench.methods.base import BackboneHead, Method, ring_enqueue, StepState, make_target, multicrop_forward
from ssl_bench.registry import register_method


@dataclass
class MoCoConfig:
    """MoCo. v2: 2-layer projector 2048 -> 128, EMA key encoder (0.99 at CIFAR scale, 0.999 ImageNet),
    queue of negatives (4096 at CIFAR scale, 65536 ImageNet), temperature 0.2.
    v3: 3-layer BN projector 4096 -> 256 + 2-layer predictor, no queue, in-batch negatives from the
    global batch, symmetric loss scaled by 2T, temperature 0.2, momentum 0.99 -> 1 (cosine).
    ``None`` fields take the version's value."""

    name: str = "moco"
    version: int = choice(2, [2, 3])
    hidden_dim: Optional[int] = None  # 2048 (v2) / 4096 (v3)
    out_dim: Optional[int] = None  # 128 (v2) / 256 (v3)
    temperature: float = 0.2
    queue_size: int = 4096  # v2 only
    momentum: Optional[float] = None  # 0.99 (v2, constant) / 0.99 -> 1 cosine (v3)
    n_local: int = 0


@register_method("moco", config=MoCoConfig, presets={
    "default": {"method": {"hidden_dim": 512, "queue_size": 1024}},
    "cifar10-cpu": {"method": {"hidden_dim": 1024}}})
class MoCo(Method):
    """MoCo v2 (EMA key encoder + queue) or v3 (EMA key encoder + predictor, in-batch negatives)."""

    def __init__(self, cfg: MoCoConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg
        v3 = cfg.version == 3
        hidden = cfg.hidden_dim or (4096 if v3 else 2048)
        out = cfg.out_dim or (256 if v3 else 128)
        self.momentum = cfg.momentum if cfg.momentum is not None else 0.99

        def build() -> BackboneHead:
            bb = build_backbone(backbone_cfg)
            head = MoCoProjectionHead(bb.embed_dim, hidden, out, num_layers=3 if v3 else 2, batch_norm=v3)
            return BackboneHead(bb, head)

        self.query = build()
        self.key = make_target(self.query, build)
        self.predictor = BYOLPredictionHead(out, hidden, out) if v3 else None
        if not v3:
            # Our own queue rather than lightly's MemoryBankModule: lightly keeps its bank out of the
            # state dict, and a resumed run must continue with the same negatives.
            self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, out), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def schedules(self) -> dict[str, S.Schedule]:
        if self.cfg.version == 3:
            return {"momentum": S.cosine(self.momentum, 1.0)}
        return {"momentum": S.constant(self.momentum)}

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.query, self.key)]

    def _q(self, x: Tensor) -> Tensor:
        z = self.query(x)
        return self.predictor(z) if self.predictor is not None else z

    def _loss_v2(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ self.queue.clone().t()
        logits = torch.cat([pos, neg], 1) / self.cfg.temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))

    def _loss_v3(self, q: Tensor, k: Tensor) -> Tensor:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        k_all = D.gather(k, with_grad=False)  # keys carry no gradient
        logits = q @ k_all.t() / self.cfg.temperature
        labels = torch.arange(q.shape[0], device=q.device) + D.rank() * q.shape[0]
        return F.cross_entropy(logits, labels) * 2 * self.cfg.temperature

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        keys = D.gather(F.normalize(keys, dim=1), with_grad=False)
        ring_enqueue(self.queue, self.queue_ptr, keys)

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        n_g = self.view_spec().n_global
        q = multicrop_forward(self._q, views)
        with torch.no_grad():
            k = multicrop_forward(self.key, views[:n_g])
        pairs = [(v, g) for v in range(len(q)) for g in range(n_g) if v != g]
        loss_fn = self._loss_v3 if self.cfg.version == 3 else self._loss_v2
        loss = sum(loss_fn(q[v], k[g]) for v, g in pairs) / len(pairs)
        if self.cfg.version == 2:
            self._enqueue(torch.cat(k))
        return {"loss": loss}

    def encoder(self) -> nn.Module:
        return self.query.backbone
