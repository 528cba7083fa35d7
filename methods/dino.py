"""DINO: self-distillation with no labels (Caron et al., ICCV 2021, arXiv:2104.14294)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import Tensor, nn

from ssl_bench import schedules as S
from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig, bounded, choice
from ssl_bench.data.views import ViewSpec
from ssl_bench.errors import ConfigError
from ssl_bench.methods.base import (
    BackboneHead,
    Method,
    StepState,
    make_target,
    target_backbone_config,
)
from ssl_bench.registry import register_method


@dataclass
class DINOConfig:
    """DINO settings. Defaults: the paper's ViT-S/16 recipe (Caron et al. 2021, §3, App. B and the
    reference ``main_dino.py``): out_dim 65536, teacher temp 0.04 (warm-up 0.04 over 30 epochs in
    the long schedules), student temp 0.1, center momentum 0.9, EMA 0.996 -> 1 (cosine), last layer
    frozen for the first epoch, 8 local crops.

    Ablation switches: ``centering=false`` never centres the teacher logits (the center stays zero);
    sharpening is off when ``teacher_temp == student_temp`` (and the warm-up temperature too).
    """

    name: str = "dino"  # the registered method (method=NAME)
    out_dim: int = bounded(65536, 1)
    hidden_dim: int = bounded(2048, 1)
    bottleneck_dim: int = bounded(256, 1)
    use_bn_in_head: bool = False  # BatchNorm in the head's MLP (main_dino.py --use_bn_in_head False)
    # weight-normalised last layer with its norm fixed at 1 (main_dino.py --norm_last_layer True)
    norm_last_layer: bool = True
    momentum_teacher: float = 0.996  # the teacher EMA's base momentum (main_dino.py --momentum_teacher 0.996)
    momentum_teacher_end: float = 1.0  # cosine end point; below 1 keeps a short run's teacher tracking the student
    centering: bool = True  # subtract the running centre from the teacher logits (the centering ablation)
    center_momentum: float = 0.9  # the centre's EMA momentum (main_dino.py DINOLoss center_momentum=0.9)
    teacher_temp: float = 0.04  # the teacher's softmax temperature after warm-up (main_dino.py --teacher_temp)
    warmup_teacher_temp: float = 0.04  # its starting value (main_dino.py --warmup_teacher_temp 0.04)
    warmup_teacher_temp_epochs: float = 0.0  # epochs of the linear warm-up (main_dino.py default 0; README 30)
    student_temp: float = 0.1  # the student's softmax temperature (main_dino.py DINOLoss student_temp=0.1)
    # step: the teacher temperature warms up linearly per step; epoch: main_dino.py's DINOLoss, a
    # np.linspace over the warm-up epochs indexed by the epoch (constant within an epoch)
    teacher_temp_unit: str = choice("step", ["step", "epoch"])
    freeze_last_layer: int = 1  # epochs the head's last layer gets no gradient (main_dino.py --freeze_last_layer 1)
    n_local: int = 8  # local crops per image (main_dino.py --local_crops_number 8)
    # each crop through the networks on its own (its own BatchNorm statistics), as solo-learn's training_step
    # forwards them; false: the crops of one size as one batch
    bn_per_view: bool = False

    def check(self) -> None:
        for key in ("teacher_temp", "warmup_teacher_temp", "student_temp"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"bad value for 'method.{key}': {getattr(self, key)}; must be > 0")
        if not 0.0 <= self.center_momentum <= 1.0:
            raise ConfigError(f"bad value for 'method.center_momentum': {self.center_momentum}; valid: [0, 1]")
        for key in ("momentum_teacher", "momentum_teacher_end"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"bad value for 'method.{key}': {getattr(self, key)}; valid: [0, 1]")


def _head(cfg: DINOConfig, in_dim: int) -> DINOProjectionHead:
    with warnings.catch_warnings():  # lightly still uses nn.utils.weight_norm (deprecated, works)
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return _make_head(cfg, in_dim)


def _make_head(cfg: DINOConfig, in_dim: int) -> DINOProjectionHead:
    return DINOProjectionHead(
        in_dim,
        cfg.hidden_dim,
        cfg.bottleneck_dim,
        cfg.out_dim,
        batch_norm=cfg.use_bn_in_head,
        freeze_last_layer=cfg.freeze_last_layer,
        norm_last_layer=cfg.norm_last_layer,
    )


@register_method("dino", config=DINOConfig)
class DINO(Method):
    """DINO: the student matches the centred, sharpened teacher (EMA of the student) across crops."""

    def __init__(self, cfg: DINOConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg

        def build(bcfg: BackboneConfig) -> BackboneHead:
            bb = build_backbone(bcfg)
            return BackboneHead(bb, _head(cfg, bb.embed_dim))

        self.student = build(backbone_cfg)
        self.teacher = make_target(self.student, lambda: build(target_backbone_config(backbone_cfg)))
        # centering=false: momentum 1 keeps lightly's center at its initial zero, so teacher logits
        # are never centred (lightly's DINOLoss has no switch of its own).
        self.criterion = DINOLoss(
            output_dim=cfg.out_dim,
            teacher_temp=cfg.teacher_temp,
            student_temp=cfg.student_temp,
            center_momentum=cfg.center_momentum if cfg.centering else 1.0,
        )

    def schedules(self) -> dict[str, S.Schedule]:
        c = self.cfg
        if c.teacher_temp_unit == "epoch":
            temp = S.linear_warmup_per_epoch(c.warmup_teacher_temp, c.teacher_temp, int(c.warmup_teacher_temp_epochs))
        else:
            temp = S.linear_warmup(c.warmup_teacher_temp, c.teacher_temp, c.warmup_teacher_temp_epochs)
        return {
            "momentum": S.cosine(c.momentum_teacher, c.momentum_teacher_end, self.schedule_convention),
            "teacher_temp": temp,
        }

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.student, self.teacher)]

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        n_global = self.view_spec().n_global
        with torch.no_grad():
            teacher_out = self.forward_views(self.teacher, views[:n_global])
        student_out = self.forward_views(self.student, views)
        temp = state.values["teacher_temp"]
        center = self.criterion.center.detach().clone()
        loss = self.criterion(teacher_out, student_out, teacher_temp=temp)
        with torch.no_grad():
            p = F.softmax((torch.stack(teacher_out).float() - center) / temp, dim=-1)
            logp = torch.log(p.clamp_min(1e-12))
            ent_sample = -(p * logp).sum(-1).mean()
            p_mean = p.mean(dim=(0, 1))
            ent_mean = -(p_mean * torch.log(p_mean.clamp_min(1e-12))).sum()
            # The loss averages CE(teacher_t, student_s) over pairs t != s; each teacher view appears
            # equally often, so subtracting the mean teacher entropy leaves the mean KL.
            kl = loss.detach().float() - ent_sample
        return {"loss": loss, "teacher_entropy": ent_sample, "teacher_mean_entropy": ent_mean, "kl": kl}

    def after_backward(self, state: StepState) -> None:
        self.student.head.cancel_last_layer_gradients(state.epoch)

    def encoder(self) -> nn.Module:
        return self.teacher.backbone

    def collapsed(self, m: dict[str, float]) -> Optional[bool]:
        """DINO Fig. 7: both collapse modes drive KL(teacher || student) to ~0; one-dimension collapse
        also drives the entropy of the mean teacher output to ~0, uniform collapse drives the
        per-sample teacher entropy to ln(out_dim)."""
        if "kl" not in m:
            return None
        log_k = math.log(self.cfg.out_dim)
        one_dim = m["teacher_mean_entropy"] < 0.1 * log_k
        uniform = m["teacher_entropy"] > 0.9 * log_k
        return bool(m["kl"] < 0.05 * log_k and (one_dim or uniform))
