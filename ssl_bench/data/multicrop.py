"""One multi-crop transform shared by every method (DINO / BYOL augmentation policy).

Global crop 1: blur p=1.0; global crop 2: blur p=0.1 + solarisation p=0.2; local crops: blur p=0.5
(Caron et al. 2021, Grill et al. 2020). Every crop gets flip, colour jitter (0.4, 0.4, 0.2, 0.1) with
p=0.8 and greyscale with p=0.2. More than two global crops alternate the two global policies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torchvision.transforms import v2 as T


@dataclass(frozen=True)
class ViewSpec:
    """How many crops a method wants: ``n_global`` at ``global_size``, ``n_local`` at ``local_size``."""

    n_global: int = 2
    n_local: int = 0


# The per-view policy, shared with the on-device path (device_aug.py): colour jitter (brightness,
# contrast, saturation, hue) and its probability, greyscale probability, blur sigma range, and
# (blur, solarisation) probabilities of global crop 1, global crop 2 and the local crops.
JITTER, JITTER_P, GREY_P, BLUR_SIGMA = (0.4, 0.4, 0.2, 0.1), 0.8, 0.2, (0.1, 2.0)
GLOBAL1, GLOBAL2, LOCAL = (1.0, 0.0), (0.1, 0.2), (0.5, 0.0)


def blur_kernel(size: int) -> int:
    """~10% of the crop, odd (BYOL: 23 px at 224)."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def crop_kwargs(d, mean: Sequence[float], std: Sequence[float]) -> dict:
    """The crop arguments of a ``DataConfig`` (both ``MultiCropTransform`` and ``DeviceMultiCrop``)."""
    return dict(spec=ViewSpec(d.n_global, d.n_local), global_size=d.global_size, local_size=d.local_size,
                global_scale=d.global_scale, local_scale=d.local_scale, mean=mean, std=std, blur=d.blur,
                solarize=d.solarize)


def _blur(size: int, p: float, enabled: bool) -> T.Transform:
    if not enabled or p <= 0:
        return T.Identity()
    return T.RandomApply([T.GaussianBlur(blur_kernel(size), sigma=BLUR_SIGMA)], p=p)


class MultiCropTransform:
    """Map one PIL image to ``n_global + n_local`` normalised float tensors (globals first), or uint8
    tensors with ``normalize=False``."""

    def __init__(
        self,
        spec: ViewSpec,
        global_size: int,
        local_size: int,
        global_scale: Sequence[float] = (0.25, 1.0),
        local_scale: Sequence[float] = (0.05, 0.25),
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        blur: bool = True,
        solarize: bool = True,
        normalize: bool = True,
    ) -> None:
        if spec.n_global < 1 or spec.n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {spec}")
        self.spec = spec
        flip_jitter = [
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(*JITTER)], p=JITTER_P),
            T.RandomGrayscale(p=GREY_P),
        ]
        # normalize=False: uint8 crops; the engine converts and normalises them on the device
        finish = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)] if normalize else [T.ToImage()]
        bicubic = T.InterpolationMode.BICUBIC

        def rrc(size: int, scale: Sequence[float]) -> T.Transform:
            return T.RandomResizedCrop(size, scale=tuple(scale), interpolation=bicubic, antialias=True)

        def view(size: int, scale: Sequence[float], policy: tuple[float, float]) -> T.Compose:
            sol = [T.RandomSolarize(threshold=128, p=policy[1])] if solarize and policy[1] > 0 else []
            return T.Compose([rrc(size, scale), *flip_jitter, _blur(size, policy[0], blur), *sol, *finish])

        self.global1 = view(global_size, global_scale, GLOBAL1)
        self.global2 = view(global_size, global_scale, GLOBAL2)
        self.local = view(local_size, local_scale, LOCAL)

    def __call__(self, img) -> list[torch.Tensor]:
        crops = [(self.global1 if i % 2 == 0 else self.global2)(img) for i in range(self.spec.n_global)]
        crops += [self.local(img) for _ in range(self.spec.n_local)]
        return crops
