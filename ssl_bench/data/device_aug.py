"""Multi-crop augmentation run batched on the device (``data.augment=device``), with kornia.

The loader then ships one uint8 image per sample (no per-image PIL work in Python, the CPU loader's
cost); the engine draws every crop of the whole batch at once, on the training device. Same policy
as :class:`ssl_bench.data.multicrop.MultiCropTransform` (random resized crop, flip, colour jitter with
torchvision's formulas, greyscale, blur and solarisation with the paper's per-view probabilities),
with three documented differences: crops are resampled bicubic without antialiasing (one batched
warp), the order of the four jitter operations is drawn once per pipeline call (one per crop policy:
first global, second global, locals) instead of per image, and images are first brought to one size
(``data.device_load_size``, default ``data.global_size``; shorter side + centre crop) so they batch.

Randomness comes from the default generators (the CPU's, and the GPU's when the batch is on one: kornia
draws its parameters where the module lives) seeded by (seed, step, rank) for each batch and restored
afterwards, so a resumed run draws the very crops the uninterrupted run drew, and each rank draws its own.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.transforms import v2 as T

from ssl_bench.data.multicrop import CropPolicy, blur_kernel


def _rgb(img):
    """Any PIL image or (C, H, W) tensor to 3 channels (``T.RGB`` costs 0.2 ms per image even on RGB
    input, twice the rest of this transform)."""
    if isinstance(img, torch.Tensor):
        return img[:3] if img.shape[-3] >= 3 else img.expand(3, *img.shape[-2:])
    return img if img.mode == "RGB" else img.convert("RGB")


def base_transform(size: int) -> T.Compose:
    """The loader's side of ``data.augment=device``: one uint8 (3, size, size) tensor per image."""
    return T.Compose([T.ToImage(), _rgb, T.Resize(size, antialias=True), T.CenterCrop(size)])


class DeviceMultiCrop(nn.Module):
    """uint8 (B, 3, H, W) batch -> ``n_global + n_local`` normalised float crop batches (globals first)."""

    def __init__(
        self,
        policy: CropPolicy,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        import kornia.augmentation as K

        spec = policy.spec
        if spec.n_global < 1 or spec.n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {spec}")
        self.spec = spec
        a = policy.aug

        def pipeline(kind: str) -> nn.Sequential:
            size, scale = policy.size_scale(kind)
            v = policy.view(kind)
            ops = [
                # "resample": one batched warp for the whole batch; kornia's default ("slice") crops and
                # resizes image by image, 128 kernel launches per crop on a GPU (measured on an H200:
                # the crops then cost more than the ViT-S step)
                K.RandomResizedCrop((size, size), scale=(scale[0], scale[1]), resample="bicubic", cropping_mode="resample"),
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
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, images: Tensor, seed: int) -> list[Tensor]:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"DeviceMultiCrop wants a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255.0)
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
            groups = [(self.global1, range(0, self.spec.n_global, 2)), (self.global2, range(1, self.spec.n_global, 2)),
                      (self.local, range(self.spec.n_global, len(crops)))]
            for pipe, idx in groups:
                if len(idx):
                    out = pipe(x.repeat(len(idx), 1, 1, 1) if len(idx) > 1 else x)
                    out = (out.clamp_(0.0, 1.0) - self.mean) / self.std
                    for i, c in zip(idx, out.split(x.shape[0])):  # dim-0 chunks: contiguous
                        crops[i] = c
        return [c for c in crops if c is not None]  # every index is filled above
