"""SimCLR (Chen et al., ICML 2020, arXiv:2002.05709)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils import dist
from torch import Tensor, nn

from ssl_bench.backbones import build_backbone
from ssl_bench.config import BackboneConfig, bounded, choice
from ssl_bench.data.views import ViewSpec
from ssl_bench.methods.base import Method, StepState
from ssl_bench.registry import register_method


@dataclass
class SimCLRConfig:
    """SimCLR: 2-layer MLP projector with BN (2048 -> 128), NT-Xent over all other samples of the
    global batch. Temperature 0.5 is the paper's CIFAR setting (0.1-0.2 for ImageNet, Table 5/B.7)."""

    name: str = "simclr"  # the registered method (method=NAME)
    hidden_dim: int = bounded(2048, 1)
    out_dim: int = bounded(128, 1)
    temperature: float = 0.5  # NT-Xent temperature (SimCLR App. B.9, CIFAR-10: 0.5)
    n_local: int = 0  # local crops per image (SimCLR: two views only)
    # each crop through the networks on its own (its own BatchNorm statistics), as solo-learn's training_step
    # forwards them; false: the crops of one size as one batch
    bn_per_view: bool = False
    # lightly's NT-Xent averages the two directions of a pair; the reference sums them
    # (simclr/objective.py ``loss = loss_a + loss_b``): "sum" doubles it, "mean" keeps the average
    loss_reduction: str = choice("sum", ["sum", "mean"])
    # BatchNorm in the projector's hidden layer: the paper's (simclr tf2/model.py projection head, use_bn);
    # solo-learn's CIFAR SimCLR (solo/methods/simclr.py:48-52) has none
    projector_bn: bool = True


class NTXent(nn.Module):
    """NT-Xent over all other samples of the global batch (SimCLR eq. 1): lightly's NTXentLoss with
    ``gather_distributed=True`` (negatives from every rank, gradients through the local part), computed the
    same way to the bit, value and gradient (test), except for how each view's similarity to itself leaves
    the softmax: lightly cuts it out with a boolean index, a device wait on a GPU at every step; here the
    remaining columns are gathered by index arithmetic, which waits for nothing."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, out0: Tensor, out1: Tensor) -> Tensor:
        out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
        big0, big1 = (torch.cat(dist.gather(o), 0) if dist.world_size() > 1 else o for o in (out0, out1))
        n, t = out0.shape[0], self.temperature
        positive = torch.arange(n, device=out0.device) + dist.rank() * n  # this rank's rows in the global batch
        # row i keeps every column but its own (positive[i]), in order: lightly's logits[~diag_mask]
        j = torch.arange(big0.shape[0] - 1, device=out0.device)[None]
        others = j + (j >= positive[:, None]).long()
        logits_00 = (torch.einsum("nc,mc->nm", out0, big0) / t).gather(1, others)
        logits_01 = torch.einsum("nc,mc->nm", out0, big1) / t
        logits_10 = torch.einsum("nc,mc->nm", out1, big0) / t
        logits_11 = (torch.einsum("nc,mc->nm", out1, big1) / t).gather(1, others)
        logits = torch.cat([torch.cat([logits_01, logits_00], 1), torch.cat([logits_10, logits_11], 1)])
        return F.cross_entropy(logits, positive.repeat(2))


@register_method("simclr", config=SimCLRConfig)
class SimCLR(Method):
    """SimCLR: contrast two views of each image against every other image in the (global) batch."""

    def __init__(self, cfg: SimCLRConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__(ViewSpec(2, cfg.n_local))
        self.cfg = cfg
        self.backbone = build_backbone(backbone_cfg)
        self.projector = SimCLRProjectionHead(
            self.backbone.embed_dim, cfg.hidden_dim, cfg.out_dim, batch_norm=cfg.projector_bn
        )
        self.criterion = NTXent(cfg.temperature)

    def _embed(self, x: Tensor) -> Tensor:
        return self.projector(self.backbone(x))

    def training_step(self, views: list[Tensor], state: StepState) -> dict[str, Tensor]:
        z = self.forward_views(self._embed, views)
        n_g = self.view_spec().n_global
        # global pairs, then each local crop as a positive for each global crop
        pairs = [(i, j) for i in range(n_g) for j in range(i + 1, n_g)]
        pairs += [(loc, g) for loc in range(n_g, len(z)) for g in range(n_g)]
        loss = sum(self.criterion(z[a], z[b]) for a, b in pairs)
        return {"loss": loss / len(pairs) if self.cfg.loss_reduction == "mean" else 2 * loss}

    def encoder(self) -> nn.Module:
        return self.backbone
