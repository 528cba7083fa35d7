"""timm model names for the suite's CIFAR-stem ResNets: ``resnet18_cifar``, ``resnet34_cifar``,
``resnet50_cifar``.

Importing this module registers them in timm's model registry, so an export of a CIFAR-stem run loads with
timm alone, no code pasted::

    import ssl_bench.timm_models, timm
    model = timm.create_model("resnet18_cifar", pretrained=True, pretrained_cfg_overlay={"file": "enc.safetensors"})

The stem is one 3x3 stride-1 convolution without the max-pool (SimCLR App. B.9; solo-learn's
``solo/methods/base.py`` uses padding 2, passed here as ``stem_padding=2``). Everything else is timm's
``ResNet``, built through timm's ``build_model_with_cfg`` (pretrained files, ``pretrained_cfg`` and
``features_only`` work as for any timm model). This module imports only torch and timm.
"""

from __future__ import annotations

from typing import cast

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

# (block, layers) of timm's resnet18 / resnet34 / resnet50 (timm/models/resnet.py)
LAYOUTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class CifarResNet(ResNet):
    """timm's ResNet with the CIFAR stem: ``conv1`` a 3x3/1 convolution, no max-pool."""

    def __init__(self, *args, stem_padding: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # built after timm's own init, in the same order as swapping it on a timm resnet (same random init)
        conv = nn.Conv2d(kwargs.get("in_chans", 3), 64, kernel_size=3, stride=1, padding=stem_padding, bias=False)
        self.add_module("conv1", conv)
        self.add_module("maxpool", nn.Identity())
        for info in self.feature_info:  # without the /2 conv and the /2 pool, each map is 4x larger
            info["reduction"] = 1 if info["module"] == "act1" else cast(int, info["reduction"]) // 4


def _cfg(**kwargs) -> dict:
    # 32 px inputs; the mean / std a run normalised with come in its export's pretrained_cfg_overlay
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"{arch}_cifar": _cfg() for arch in LAYOUTS})


def create(arch: str, pretrained: bool = False, **kwargs) -> CifarResNet:
    block, layers = LAYOUTS[arch]
    return build_model_with_cfg(CifarResNet, f"{arch}_cifar", pretrained, block=block, layers=layers, **kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-18 with the CIFAR stem (3x3/1 conv, no max-pool)."""
    return create("resnet18", pretrained, **kwargs)


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-34 with the CIFAR stem (3x3/1 conv, no max-pool)."""
    return create("resnet34", pretrained, **kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-50 with the CIFAR stem (3x3/1 conv, no max-pool)."""
    return create("resnet50", pretrained, **kwargs)
