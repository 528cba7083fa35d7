"""One multi-crop transform shared by every method, built from a typed policy (:class:`CropPolicy`).

A policy holds the crop sizes and scales and the augmentation of every crop kind (first global,
second global, local): flip, colour jitter, greyscale, Gaussian blur and solarisation with their
probabilities. Each method's recipe sets its own (``data.aug`` in ``configs/recipes/*``); the schema
default is DINO's/BYOL's (Caron et al. 2021, Grill et al. 2020). More than two global crops alternate
the two global policies. The loader (PIL, here) and ``data.augment=device`` (batched tensor ops) build from the same
policy object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from PIL import ImageFilter
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from ssl_bench.config import AugConfig, ViewAugConfig
from ssl_bench.data.views import ViewSpec

def blur_kernel(size: int, aug: AugConfig | None = None) -> int:
    """~10% of the crop, odd (BYOL: 23 px at 224); with ``aug.blur_kernel=pil`` wide enough for the largest
    sigma (2 ceil(3 sigma) + 1 taps, reflect padding below the crop size), as PIL's blur has no cut-off."""
    if aug is not None and aug.blur_kernel == "pil":
        return min(2 * math.ceil(3 * max(aug.blur_sigma)) + 1, 2 * size - 1)
    return max(3, int(0.1 * size) // 2 * 2 + 1)


class PILGaussianBlur(torch.nn.Module):
    """PIL's ``ImageFilter.GaussianBlur(radius=sigma)`` with sigma ~ U(lo, hi) drawn from torch's generator
    (the loader seeds it per sample), the blur of DINO ``utils.GaussianBlur``, MoCo ``loader.GaussianBlur``,
    SwAV ``PILRandomGaussianBlur`` and solo-learn ``GaussianBlur``."""

    def __init__(self, sigma: Sequence[float]) -> None:
        super().__init__()
        self.lo, self.hi = float(sigma[0]), float(sigma[1])

    def forward(self, img):
        radius = self.lo + (self.hi - self.lo) * torch.rand(()).item()
        if isinstance(img, torch.Tensor):
            return TF.pil_to_tensor(TF.to_pil_image(img).filter(ImageFilter.GaussianBlur(radius=radius)))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))


@dataclass(frozen=True)
class CropPolicy:
    """Everything both crop paths need: crop counts, sizes and scales, and the augmentation of each
    crop kind. ``blur=False`` / ``solarize=False`` (``data.blur`` / ``data.solarize``) switch those
    operations off on every crop, whatever ``aug`` says."""

    spec: ViewSpec
    global_size: int
    local_size: int
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.25)
    aug: AugConfig = field(default_factory=AugConfig)
    blur: bool = True
    solarize: bool = True

    def view(self, kind: str) -> ViewAugConfig:
        """The (blur, solarisation) probabilities of ``global1``, ``global2`` or ``local`` crops, with the
        switches applied."""
        v = getattr(self.aug, kind)
        return replace(v, blur_p=v.blur_p if self.blur else 0.0, solarize_p=v.solarize_p if self.solarize else 0.0)

    def size_scale(self, kind: str) -> tuple[int, tuple[float, float]]:
        return (self.local_size, self.local_scale) if kind == "local" else (self.global_size, self.global_scale)


def crop_policy(d) -> CropPolicy:
    """The crop policy of a resolved ``DataConfig``."""
    return CropPolicy(ViewSpec(d.n_global, d.n_local), d.global_size, d.local_size, tuple(d.global_scale),
                      tuple(d.local_scale), d.aug, d.blur, d.solarize)


def _blur(size: int, p: float, aug: AugConfig) -> T.Transform:
    if p <= 0:
        return T.Identity()
    if aug.blur_kernel == "pil":
        return T.RandomApply([PILGaussianBlur(aug.blur_sigma)], p=p)
    return T.RandomApply([T.GaussianBlur(blur_kernel(size), sigma=tuple(aug.blur_sigma))], p=p)


class MultiCropTransform:
    """Map one PIL image to ``n_global + n_local`` normalised float tensors (globals first), or uint8
    tensors with ``normalize=False``."""

    def __init__(
        self,
        policy: CropPolicy,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        normalize: bool = True,
    ) -> None:
        spec = policy.spec
        if spec.n_global < 1 or spec.n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {spec}")
        self.spec = spec
        a = policy.aug
        flip_jitter = [
            T.RandomHorizontalFlip(p=a.flip_p),
            T.RandomApply([T.ColorJitter(*a.jitter)], p=a.jitter_p),
            T.RandomGrayscale(p=a.grey_p),
        ]
        # normalize=False: uint8 crops; the engine converts and normalises them on the device
        finish = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)] if normalize else [T.ToImage()]
        resample = T.InterpolationMode.BICUBIC if a.interpolation == "bicubic" else T.InterpolationMode.BILINEAR

        def view(kind: str) -> T.Compose:
            size, scale = policy.size_scale(kind)
            v = policy.view(kind)
            sol = [T.RandomSolarize(threshold=128, p=v.solarize_p)] if v.solarize_p > 0 else []
            rrc = T.RandomResizedCrop(size, scale=tuple(scale), interpolation=resample, antialias=True)
            return T.Compose([rrc, *flip_jitter, _blur(size, v.blur_p, a), *sol, *finish])

        self.global1 = view("global1")
        self.global2 = view("global2")
        self.local = view("local")

    def __call__(self, img) -> list[torch.Tensor]:
        crops = [(self.global1 if i % 2 == 0 else self.global2)(img) for i in range(self.spec.n_global)]
        crops += [self.local(img) for _ in range(self.spec.n_local)]
        return crops
