"""timm backbones behind one small interface.

Every backbone is a :class:`Backbone`: ``embed_dim``, ``forward(x) -> (B, embed_dim)`` pooled
features (ViT: CLS token; ResNet: global average pool), ``patch_features(x) -> (B, h, w, D)`` for
dense evaluations, and ``last_attention(x) -> (B, heads, N, N)`` for ViTs (DINO §4.2).
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any, Optional

import timm
import torch
from torch import Tensor, nn

import ssl_bench.timm_models  # noqa: F401  (registers resnet*_cifar in timm: the CIFAR-stem backbones)
from ssl_bench.config import BackboneConfig, bounded, choice
from ssl_bench.errors import ConfigError
from ssl_bench.registry import BACKBONES, register_backbone


class Backbone(nn.Module):
    """Interface shared by all backbones. ``model`` is the timm model, built by
    ``timm.create_model(timm_name, **create_kwargs)``; ``timm_name`` is ``arch``, or ``arch + "_cifar"`` for
    the CIFAR stem (registered by :mod:`ssl_bench.timm_models`)."""

    embed_dim: int
    is_vit: bool = False
    model: Any  # a timm model: its submodules (blocks, patch_embed, ...) are reached by name
    arch: str
    create_kwargs: dict
    cifar_stem: bool = False

    @property
    def timm_name(self) -> str:
        return f"{self.arch}_cifar" if self.cifar_stem else self.arch

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def patch_features(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def last_attention(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no self-attention; use a ViT backbone")


@dataclass
class ViTConfig(BackboneConfig):
    """timm VisionTransformer; ``dynamic_img_size`` lets local crops of another size through."""

    patch_size: int = bounded(16, 1)  # pixels a side of each patch token (DINO ViT-S/16: 16)
    depth: Optional[int] = bounded(None, 1)  # None: the architecture's depth (12)
    num_heads: Optional[int] = bounded(None, 1)  # None: the architecture's (timm vit_small: 6; MoCo v3's ViT-S: 12)
    drop_path_rate: float = 0.1  # stochastic depth of the trained network (DINO main_dino.py --drop_path_rate 0.1)
    # position embeddings of crops of another size (local crops): timm (resample_abs_pos_embed to the exact
    # grid) or dino (DINO vision_transformer.py:174-194 interpolate_pos_encoding: bicubic by scale factor
    # (grid + 0.1) / sqrt(N), no antialias), which the dino paper recipe uses
    pos_embed_interp: str = choice("timm", ["timm", "dino"])
    # the target network's (DINO teacher, BYOL target, MoCo key encoder): the references build it
    # without stochastic depth (DINO main_dino.py: vits.__dict__[arch](patch_size) for the teacher)
    target_drop_path_rate: float = 0.0

    def check(self) -> None:
        super().check()
        if self.img_size % self.patch_size:
            raise ConfigError(
                f"bad value for 'backbone.patch_size': {self.patch_size} with backbone.img_size={self.img_size}; "
                "valid: a divisor of the image size (a ViT cuts whole patches)"
            )


@dataclass
class ViTTinyConfig(ViTConfig):
    img_size: int = 32
    patch_size: int = 4


@dataclass
class ViTSmallConfig(ViTConfig):
    img_size: int = 224
    patch_size: int = 16


@dataclass
class ResNetConfig(BackboneConfig):
    """timm ResNet; ``cifar_stem`` swaps the 7x7/2 conv + max-pool for one 3x3/1 conv (32 px inputs)."""

    img_size: int = 32
    cifar_stem: bool = True  # the 3x3/1 stem without max-pool of SimCLR App. B.9 / solo-learn (32 px inputs)
    # the CIFAR stem's padding: 1 keeps 32 px at 32 px (SimCLR App. B.9); solo-learn's is 2
    # (solo/methods/base.py:200-202 Conv2d(3, 64, kernel_size=3, stride=1, padding=2): 34 x 34 maps)
    stem_padding: int = 1
    # each residual branch's last BN scale starts at zero (Goyal et al. 2017, "Accurate, Large Minibatch SGD"
    # §5.1; timm's zero_init_last, torchvision's zero_init_residual)
    zero_init_residual: bool = True
    channels_last: bool = True  # NHWC weights and inputs (oneDNN / cuDNN fast path); same numbers

    def check(self) -> None:
        super().check()
        if self.stem_padding not in (0, 1, 2, 3):
            raise ConfigError(f"bad value for 'backbone.stem_padding': {self.stem_padding}; valid: 0, 1, 2 or 3")


class TimmViT(Backbone):
    is_vit = True

    def __init__(self, arch: str, cfg: ViTConfig) -> None:
        super().__init__()
        kwargs = dict(img_size=cfg.img_size, patch_size=cfg.patch_size, drop_path_rate=cfg.drop_path_rate)
        if cfg.depth is not None:
            kwargs["depth"] = cfg.depth
        if cfg.num_heads is not None:
            width: int = getattr(timm.create_model(arch, pretrained=False, depth=1, num_classes=0), "num_features")
            if cfg.num_heads < 1 or width % cfg.num_heads:
                raise ConfigError(
                    f"bad value for 'backbone.num_heads': {cfg.num_heads}; valid: a divisor of {arch}'s width {width}"
                )
            kwargs["num_heads"] = cfg.num_heads
        self.arch, self.create_kwargs = arch, dict(num_classes=0, dynamic_img_size=True, **kwargs)
        self.model = timm.create_model(arch, pretrained=False, **self.create_kwargs)
        self.embed_dim = self.model.num_features
        self.num_heads = self.model.blocks[-1].attn.num_heads
        self.patch_size = cfg.patch_size
        if cfg.pos_embed_interp == "dino":
            self.model._pos_embed = types.MethodType(_dino_pos_embed, self.model)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _tokens_before_last_block(self, x: Tensor) -> Tensor:
        m = self.model
        x = m.patch_embed(x)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        x = m.norm_pre(x)
        for blk in m.blocks[:-1]:
            x = blk(x)
        return x

    def patch_features(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.model.forward_features(x)[:, self.model.num_prefix_tokens :]
        return tokens.reshape(x.shape[0], h, w, -1)

    def last_blocks(self, x: Tensor, n: int) -> list[tuple[Tensor, Tensor]]:
        """(patch tokens (B, N, D), CLS token (B, D)) of the last ``n`` blocks, each through the final
        norm (DINO ``get_intermediate_layers``), via timm's ``forward_intermediates``."""
        out = self.model.forward_intermediates(
            x, indices=n, norm=True, return_prefix_tokens=True, intermediates_only=True, output_fmt="NLC"
        )
        return [(tokens, prefix[:, 0]) for tokens, prefix in out]

    def last_attention(self, x: Tensor) -> Tensor:
        """Softmax attention of the last block, (B, heads, N, N) with the CLS token first."""
        tokens = self._tokens_before_last_block(x)
        blk = self.model.blocks[-1]
        attn = blk.attn
        y = blk.norm1(tokens)
        b, n, c = y.shape
        qkv = attn.qkv(y).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def _dino_pos_embed(vit: Any, x: Tensor) -> Tensor:
    """timm's ``VisionTransformer._pos_embed`` (NHWC patch tokens in, class token prepended) with DINO's
    ``interpolate_pos_encoding``: a pos_embed over the square training grid, class token first."""
    b, h, w, c = x.shape
    pos = vit.pos_embed
    n = pos.shape[1] - 1
    if h * w != n or h != w:
        side = math.sqrt(n)
        grid = pos[:, 1:].reshape(1, int(side), int(side), c).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, scale_factor=((h + 0.1) / side, (w + 0.1) / side), mode="bicubic")
        pos = torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, c)), dim=1)
    x = torch.cat((vit.cls_token.expand(b, -1, -1), x.reshape(b, -1, c)), dim=1)
    return vit.pos_drop(x + pos)


class TimmResNet(Backbone):
    def __init__(self, arch: str, cfg: ResNetConfig) -> None:
        super().__init__()
        self.arch, self.cifar_stem, self.stem_padding = arch, cfg.cifar_stem, cfg.stem_padding
        self.create_kwargs: dict = dict(num_classes=0)
        if cfg.cifar_stem:  # the 3x3/1 stem of SimCLR App. B.9 / solo-learn, without the max-pool: resnet*_cifar
            self.create_kwargs["stem_padding"] = cfg.stem_padding
        self.model = timm.create_model(
            self.timm_name, pretrained=False, zero_init_last=cfg.zero_init_residual, **self.create_kwargs
        )
        self.embed_dim = self.model.num_features
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.contiguous(memory_format=self.memory_format))

    def patch_features(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x.contiguous(memory_format=self.memory_format)).permute(0, 2, 3, 1)


def _vit(arch: str):
    def build(cfg: ViTConfig) -> TimmViT:
        return TimmViT(arch, cfg)

    build.__doc__ = f"timm {arch} (size and patch from backbone.img_size / patch_size; dynamic image size)"
    return build


def _resnet(arch: str):
    def build(cfg: ResNetConfig) -> TimmResNet:
        return TimmResNet(arch, cfg)

    build.__doc__ = f"timm {arch} (backbone.cifar_stem: a 3x3/1 stem without max-pool, timm's {arch}_cifar)"
    return build


# the timm architecture behind each suite backbone (timm names map back to these: `eval weights=timm:NAME`)
TIMM_ARCHS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "resnet18": "resnet18",
    "resnet50": "resnet50",
}
register_backbone("vit_tiny", config=ViTTinyConfig)(_vit(TIMM_ARCHS["vit_tiny"]))
register_backbone("vit_small", config=ViTSmallConfig)(_vit(TIMM_ARCHS["vit_small"]))
register_backbone("vit_base", config=ViTSmallConfig)(_vit(TIMM_ARCHS["vit_base"]))
register_backbone("resnet18", config=ResNetConfig)(_resnet(TIMM_ARCHS["resnet18"]))
register_backbone("resnet50", config=ResNetConfig)(_resnet(TIMM_ARCHS["resnet50"]))


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """Instantiate the registered backbone named by ``cfg.name``."""
    return BACKBONES.get(cfg.name).obj(cfg)


@torch.no_grad()
def infer_embed_dim(cfg: BackboneConfig) -> int:
    return build_backbone(cfg).embed_dim
