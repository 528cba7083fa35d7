"""The kornia multi-crop pipeline that ``data.augment=device`` ran before ssl_bench.data.device_aug drew crops
as a few batched tensor ops: kept here as the baseline the benchmarks count and time beside it (same policy,
same call signature; kornia augmentation modules, one call per crop policy).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ssl_bench.data.device_aug import DeviceMultiCrop
from ssl_bench.data.multicrop import CropPolicy, blur_kernel


class KorniaMultiCrop(DeviceMultiCrop):
    """The suite's crop module (policy, checks, normalisation) with kornia's augmentation modules drawing the
    crops: one pipeline per crop policy (first global, second global, local)."""

    def __init__(self, policy: CropPolicy, *mean_std: Sequence[float]) -> None:
        super().__init__(policy, *mean_std)
        import kornia.augmentation as K

        a = policy.aug

        def pipeline(kind: str) -> nn.Sequential:
            size, scale = policy.size_scale(kind)
            v = policy.view(kind)
            ops = [
                # "resample": one batched warp for the whole batch; kornia's default ("slice") crops and
                # resizes image by image, 128 kernel launches per crop on a GPU (measured on an H200:
                # the crops then cost more than the ViT-S step)
                K.RandomResizedCrop(
                    (size, size), scale=(scale[0], scale[1]), resample="bicubic", cropping_mode="resample"
                ),
                K.RandomHorizontalFlip(p=a.flip_p),
                K.ColorJitter(a.jitter[0], a.jitter[1], a.jitter[2], a.jitter[3], p=a.jitter_p),
                K.RandomGrayscale(p=a.grey_p),
            ]
            if v.blur_p > 0:
                k = blur_kernel(size)
                ops.append(K.RandomGaussianBlur((k, k), sigma=(a.blur_sigma[0], a.blur_sigma[1]), p=v.blur_p))
            if v.solarize_p > 0:
                # threshold 0.5 (torchvision: 128/255), no brightness addition
                ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=v.solarize_p))
            return nn.Sequential(*ops)

        self.global1 = pipeline("global1")
        self.global2 = pipeline("global2")
        self.local = pipeline("local")

    @torch.no_grad()
    def forward(self, images: Tensor, seed: int) -> list[Tensor]:
        x = self._floats(images)
        # Seeded per step so a resumed run draws the same crops; the caller's random streams (CPU, and
        # this GPU's when the batch is on one) are restored afterwards.
        cuda = images.device.type == "cuda"
        with torch.random.fork_rng(devices=[images.device] if cuda else [], device_type="cuda"):
            torch.default_generator.manual_seed(seed)  # kornia draws its parameters where it lives
            if cuda:
                with torch.cuda.device(images.device):
                    torch.cuda.manual_seed(seed)
            # One pipeline call per policy, not per crop: a kornia call is ~2,000 small tensor ops
            # (parameter draws, masks, colour conversions) whatever the batch size, so the same-policy
            # crops (the locals; the 1st/3rd/... and 2nd/4th/... globals) go through it as one
            # batch of repeated images and are split afterwards
            crops: list[Tensor | None] = [None] * (self.spec.n_global + self.spec.n_local)
            groups = [
                (self.global1, range(0, self.spec.n_global, 2)),
                (self.global2, range(1, self.spec.n_global, 2)),
                (self.local, range(self.spec.n_global, len(crops))),
            ]
            for pipe, idx in groups:
                if len(idx):
                    out = pipe(x.repeat(len(idx), 1, 1, 1) if len(idx) > 1 else x)
                    out = (out.clamp_(0.0, 1.0) - self.mean) / self.std
                    for i, c in zip(idx, out.split(x.shape[0])):  # dim-0 chunks: contiguous
                        crops[i] = c
        return [c for c in crops if c is not None]  # every index is filled above
