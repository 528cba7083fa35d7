"""BYOL (Grill et al., NeurIPS 2020, arXiv:2006.07733)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import Tensor, nn

from ssl_bench import schedules as S
from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig, bounded, choice
from ssl_bench.data.views import ViewSpec
from ssl_bench.methods.base import (
    BackboneHead,
    Method,
    StepState,
    make_target,
    target_backbone_config,
)
from ssl_bench.registry import register_method


@dataclass
class BYOLConfig:
    """BYOL: projector 4096 -> 256 and predictor 4096 -> 256 (MLP with BN), target = EMA of the
    online backbone + projector with cosine momentum 0.996 -> 1 (ImageNet; 0.99 -> 1 at CIFAR scale),
    symmetric negative-cosine loss, no negatives."""

    name: str = "byol"  # the registered method (method=NAME)
    hidden_dim: int = bounded(4096, 1)
    out_dim: int = bounded(256, 1)
    momentum: float = 0.996  # the target EMA's base momentum tau_base (BYOL §3.2: 0.996)
    momentum_end: float = 1.0  # cosine end point; below 1 keeps a short run's target tracking the online net
    n_local: int = 0  # local crops per image (BYOL: two global views only)
    # each crop through the networks on its own (its own BatchNorm statistics), as solo-learn's training_step
    # forwards them; false: the crops of one size as one batch
    bn_per_view: bool = False
    # factor on the scheduled LR for the predictor (1 in the paper; SimSiam, Chen & He 2021, found a
    # predictor that adapts faster than the encoder helps; a lever for short schedules)
    predictor_lr_mult: float = 1.0
    loss_reduction: str = choice("sum", ["sum", "mean"])  # over loss directions: sum (reference) or mean


@register_method("byol", config=BYOLConfig)
class BYOL(Method):
    """BYOL: the online predictor regresses the EMA target's projection of another view."""

    def __init__(self, cfg: BYOLConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg

        def build(bcfg: BackboneConfig) -> BackboneHead:
            bb = build_backbone(bcfg)
            return BackboneHead(bb, BYOLProjectionHead(bb.embed_dim, cfg.hidden_dim, cfg.out_dim))

        self.online = build(backbone_cfg)
        self.predictor = BYOLPredictionHead(cfg.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.target = make_target(self.online, lambda: build(target_backbone_config(backbone_cfg)))
        self.criterion = NegativeCosineSimilarity()

    def schedules(self) -> dict[str, S.Schedule]:
        return {"momentum": S.cosine(self.cfg.momentum, self.cfg.momentum_end, self.schedule_convention)}

    def lr_multipliers(self) -> dict[str, float]:
        return {"predictor": self.cfg.predictor_lr_mult}

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.online, self.target)]

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        n_g = self.view_spec().n_global
        p = self.forward_views(lambda x: self.predictor(self.online(x)), views)
        with torch.no_grad():
            z = self.forward_views(self.target, views[:n_g])
        pairs = [(v, g) for v in range(len(p)) for g in range(n_g) if v != g]
        # lightly's NegativeCosineSimilarity is -cos; BYOL's 2 - 2cos differs by an affine map. The
        # reference sums the two directions (BYOL §3.1, loss_theta + loss_tilde); "mean" averages them.
        loss = sum(2 + 2 * self.criterion(p[v], z[g]) for v, g in pairs)
        return {"loss": loss / len(pairs) if self.cfg.loss_reduction == "mean" else loss}

    def encoder(self) -> nn.Module:
        return self.online.backbone
