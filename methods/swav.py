"""SwAV (Caron et al., NeurIPS 2020, arXiv:2006.09882)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from torch import Tensor, nn

from ssl_bench import dist as D
from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig, bounded
from ssl_bench.data.views import ViewSpec
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import Method, StepState, ring_enqueue
from ssl_bench.registry import register_method


@dataclass
class SwAVConfig:
    """SwAV: projector 2048 -> 128, 3000 prototypes, temperature 0.1, Sinkhorn-Knopp codes on the
    global crops (3 iterations, epsilon 0.05, over the global batch), swapped prediction across all
    crops, prototypes frozen for the first epoch and L2-normalised after every step, 2 + 6 crops.

    Optional queue (the paper's small-batch fix, reference ``main_swav.py``: 3840 features, from
    epoch 15): ``queue_size=N`` keeps the last N global-crop projections per global view over all
    processes (each of W processes holds N // W, as the reference's ``queue_length // world_size``);
    once full and from ``queue_start_epoch`` on, they join the batch in the Sinkhorn step so the
    equipartition spans more samples than the batch holds."""

    name: str = "swav"  # the registered method (method=NAME)
    hidden_dim: int = bounded(2048, 1)
    out_dim: int = bounded(128, 1)
    n_prototypes: int = bounded(3000, 1)
    temperature: float = 0.1  # the prototype scores' softmax temperature (main_swav.py --temperature 0.1)
    sinkhorn_iterations: int = 3  # Sinkhorn-Knopp iterations (main_swav.py --sinkhorn_iterations 3)
    sinkhorn_epsilon: float = 0.05  # the codes' entropic regularisation (main_swav.py --epsilon 0.05)
    freeze_prototypes_epochs: float = 1.0  # fractions allowed: short schedules freeze for a part of epoch 1
    n_local: int = 6  # local crops per image (scripts/swav_800ep_pretrain.sh --nmb_crops 2 6)
    # each crop through the networks on its own (its own BatchNorm statistics), as solo-learn's training_step
    # forwards them; false: the crops of one size as one batch
    bn_per_view: bool = False
    queue_size: int = 0  # 0: no queue
    queue_start_epoch: int = 15  # first epoch that uses the queue (main_swav.py --epoch_queue_starts 15)
    # factor on the scheduled LR for the prototypes (1 in the paper). A short-schedule lever: AdamW moves
    # each weight by about the LR per step, so at 2.5e-4 over ~100 steps the unit-norm prototypes barely move
    prototypes_lr_mult: float = 1.0
    # true: the backbone runs once per crop size and the projector once on all crops together, so its
    # BatchNorm statistics span every crop (reference src/resnet50.py:308-322 forward, then forward_head);
    # false: backbone and projector once per crop size
    head_on_all_crops: bool = False

    def check(self) -> None:
        if self.queue_size < 0:
            raise ConfigError(f"bad value for 'method.queue_size': {self.queue_size}; must be >= 0 (0 = no queue)")


@register_method("swav", config=SwAVConfig)
class SwAV(Method):
    """SwAV: predict the Sinkhorn cluster code of one view from the other views."""

    def __init__(self, cfg: SwAVConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg
        self.backbone = build_backbone(backbone_cfg)
        self.projector = SwaVProjectionHead(self.backbone.embed_dim, cfg.hidden_dim, cfg.out_dim)
        self.prototypes = SwaVPrototypes(cfg.out_dim, cfg.n_prototypes)
        # lightly's prototype layer is an nn.Linear with a bias; the paper's (reference
        # ``nn.Linear(output_dim, nmb_prototypes, bias=False)``) has none, so the scores are the cosine
        # similarities to the unit prototypes. At init the bias (+-0.09) was as large as those similarities.
        for layer in self.prototypes.heads:
            layer.bias = None
        self.prototypes.normalize()
        self.queue_len = cfg.queue_size // D.world_size()  # main_swav.py: queue_length // world_size
        if cfg.queue_size > 0:
            # A ring buffer registered on the module, so checkpoints carry it (resume stays exact).
            self.register_buffer("queue", torch.zeros(2, self.queue_len, cfg.out_dim))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.criterion = SwaVLoss(
            temperature=cfg.temperature,
            sinkhorn_iterations=cfg.sinkhorn_iterations,
            sinkhorn_epsilon=cfg.sinkhorn_epsilon,
            sinkhorn_gather_distributed=True,
        )

    def _embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.projector(self.backbone(x)), dim=1)

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        n_g = self.view_spec().n_global
        if self.cfg.head_on_all_crops:
            feats = torch.cat(self.forward_views(self.backbone, views))
            z = list(F.normalize(self.projector(feats), dim=1).chunk(len(views)))
        else:
            z = self.forward_views(self._embed, views)
        scores = [self.prototypes(x) for x in z]
        queue_scores = None
        if self.cfg.queue_size > 0:
            use = state.epoch >= self.cfg.queue_start_epoch and int(self.queue_filled) >= self.queue_len
            if use:  # the queue holds the two global views; more global crops reuse them in turn
                queue_scores = [self.prototypes(self.queue[i % 2]) for i in range(n_g)]
            self._enqueue([x.detach() for x in z[:2]])
        return {"loss": self.criterion(scores[:n_g], scores[n_g:], queue_scores)}

    @torch.no_grad()
    def _enqueue(self, feats: list[Tensor]) -> None:
        n = ring_enqueue(self.queue, self.queue_ptr, torch.stack(feats))
        self.queue_filled.copy_(torch.clamp(self.queue_filled + n, max=self.queue_len))

    def lr_multipliers(self) -> dict[str, float]:
        return {"prototypes": self.cfg.prototypes_lr_mult}

    def after_backward(self, state: StepState) -> None:
        if state.step < self.cfg.freeze_prototypes_epochs * state.steps_per_epoch:
            for p in self.prototypes.parameters():
                p.grad = None

    def after_step(self, state: StepState) -> None:
        self.prototypes.normalize()

    def encoder(self) -> nn.Module:
        return self.backbone
