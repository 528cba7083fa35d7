"""SwAV (Caron et al., NeurIPS 2020, arXiv:2006.09882)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from torch import Tensor, nn

from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig
from ssl_bench.data.multicrop import ViewSpec
from ssl_bench.methods.base import Method, StepState, multicrop_forward
from ssl_bench.registry import register_method


@dataclass
class SwAVConfig:
    """SwAV: projector 2048 -> 128, 3000 prototypes, temperature 0.1, Sinkhorn-Knopp codes on the
    global crops (3 iterations, epsilon 0.05, over the global batch), swapped prediction across all
    crops, prototypes frozen for the first epoch and L2-normalised after every step, 2 + 6 crops."""

    name: str = "swav"
    hidden_dim: int = 2048
    out_dim: int = 128
    n_prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    freeze_prototypes_epochs: int = 1
    n_local: int = 6


@register_method("swav", config=SwAVConfig, presets={
    "default": {"method": {"hidden_dim": 512, "n_prototypes": 100, "n_local": 4}},
    "cifar10-cpu": {"method": {"hidden_dim": 1024, "n_prototypes": 300, "n_local": 4}}})
class SwAV(Method):
    """SwAV: predict the Sinkhorn cluster code of one view from the other views."""

    def __init__(self, cfg: SwAVConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg
        self.backbone = build_backbone(backbone_cfg)
        self.projector = SwaVProjectionHead(self.backbone.embed_dim, cfg.hidden_dim, cfg.out_dim)
        self.prototypes = SwaVPrototypes(cfg.out_dim, cfg.n_prototypes)
        self.prototypes.normalize()
        self.criterion = SwaVLoss(temperature=cfg.temperature, sinkhorn_iterations=cfg.sinkhorn_iterations,
                                  sinkhorn_epsilon=cfg.sinkhorn_epsilon, sinkhorn_gather_distributed=True)

    def _scores(self, x: Tensor) -> Tensor:
        return self.prototypes(F.normalize(self.projector(self.backbone(x)), dim=1))

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        n_g = self.view_spec().n_global
        scores = multicrop_forward(self._scores, views)
        return {"loss": self.criterion(scores[:n_g], scores[n_g:])}

    def after_backward(self, state: StepState) -> None:
        if state.epoch < self.cfg.freeze_prototypes_epochs:
            for p in self.prototypes.parameters():
                p.grad = None

    def after_step(self, state: StepState) -> None:
        self.prototypes.normalize()

    def encoder(self) -> nn.Module:
        return self.backbone
