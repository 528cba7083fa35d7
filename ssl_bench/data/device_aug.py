"""Multi-crop augmentation run batched on the device (``data.augment=device``), as a few batched tensor ops.

The loader then ships one uint8 image per sample (no per-image PIL work in Python, the CPU loader's
cost); the engine draws every crop of the whole batch at once, on the training device. Same policy
as :class:`ssl_bench.data.multicrop.MultiCropTransform`, with torchvision's sampling and formulas (random
resized crop, flip, colour jitter in a random order per crop, greyscale, Gaussian blur and solarisation
with the policy's per-crop-kind probabilities).

All crops of one size are one batch: every random parameter of every crop is drawn in a handful of
tensor calls (:func:`sample_crops`), the crops and flips are one bicubic ``grid_sample`` over one sampling
grid, and the colour operations are per-crop arithmetic with the crop's own factors (:func:`apply_crops`),
so a call launches a few hundred small ops whatever the number of crops, and never waits for the device
(no ``.item()``, no data-dependent Python branch). A crop's random order of the four jitter operations is
kept exactly: its linear operations before the hue shift, the hue shift, then those after it. Documented
differences to the PIL loader: crops are resampled bicubic from the whole image without antialiasing (the
loader resizes the cut-out crop with antialiasing), and images are first brought to one size
(``data.device_load_size``, default ``data.global_size``; shorter side + centre crop) so they batch.

Randomness comes from a generator of the batch's device seeded with (seed, step, rank) for each batch, so a
resumed run draws the very crops the uninterrupted run drew, each rank draws its own, and the caller's random
streams are left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2 as T

from ssl_bench.config import AugConfig
from ssl_bench.data.multicrop import CropPolicy, blur_kernel

RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision RandomResizedCrop's default aspect-ratio range
ATTEMPTS = 10  # torchvision RandomResizedCrop.get_params: ten tries, then a centre crop
SOLARIZE_AT = 128 / 255  # torchvision RandomSolarize(threshold=128) on uint8 pixels (the loader's)
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BRIGHTNESS, CONTRAST, SATURATION, HUE, NONE = 0, 1, 2, 3, -1


def _rgb(img):
    """Any PIL image or (C, H, W) tensor to 3 channels (``T.RGB`` costs 0.2 ms per image even on RGB
    input, twice the rest of this transform)."""
    if isinstance(img, torch.Tensor):
        return img[:3] if img.shape[-3] >= 3 else img.expand(3, *img.shape[-2:])
    return img if img.mode == "RGB" else img.convert("RGB")


def base_transform(size: int) -> T.Compose:
    """The loader's side of ``data.augment=device``: one uint8 (3, size, size) tensor per image."""
    return T.Compose([T.ToImage(), _rgb, T.Resize(size, antialias=True), T.CenterCrop(size)])


@dataclass
class CropParams:
    """Every random draw of N crops, one row per crop (``box`` is torchvision's (top, left, height, width)
    in input pixels; ``factors`` brightness, contrast, saturation, hue; ``order`` the jitter operations in
    the order applied, codes as :data:`BRIGHTNESS` ...)."""

    box: Tensor  # (N, 4) float
    flip: Tensor  # (N,) bool
    factors: Tensor  # (N, 4): (1, 1, 1, 0), the identity, where jitter is not applied
    order: Tensor  # (N, 4) long, a permutation of 0..3
    grey: Tensor  # (N,) bool
    sigma: Tensor  # (N,) blur sigma, 0 where the crop is not blurred
    solarize: Tensor  # (N,) bool


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, dev) -> Tensor:
    return torch.rand(shape, generator=g, device=dev).mul_(hi - lo).add_(lo)


def sample_crops(
    n: int,
    height: int,
    width: int,
    scale: Sequence[float],
    aug: AugConfig,
    blur_p: Tensor,
    solarize_p: Tensor,
    g: torch.Generator,
) -> CropParams:
    """Draw the parameters of ``n`` crops from images of (height, width), as torchvision's transforms draw
    them one crop at a time. ``blur_p``/``solarize_p`` are per crop, (n,), on the generator's device."""
    dev = blur_p.device
    # RandomResizedCrop.get_params, ten attempts at once: the first that fits, else the centre crop
    area = _uniform(g, (n, ATTEMPTS), scale[0], scale[1], dev).mul_(height * width)
    ratio = _uniform(g, (n, ATTEMPTS), math.log(RATIO[0]), math.log(RATIO[1]), dev).exp_()
    w, h = (area * ratio).sqrt_().round_(), (area / ratio).sqrt_().round_()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first attempt that fits (0 when none does)
    any_fit = fits.any(1)
    in_ratio = width / height
    cw, ch = (
        (width, round(width / RATIO[0]))
        if in_ratio < RATIO[0]
        else (round(height * RATIO[1]), height)
        if in_ratio > RATIO[1]
        else (width, height)
    )
    w = torch.where(any_fit, w.gather(1, first).squeeze(1), float(cw))
    h = torch.where(any_fit, h.gather(1, first).squeeze(1), float(ch))
    top = torch.rand(n, generator=g, device=dev).mul_(height - h + 1).floor_()
    left = torch.rand(n, generator=g, device=dev).mul_(width - w + 1).floor_()
    top = torch.where(any_fit, top, ((height - h) / 2).floor())
    left = torch.where(any_fit, left, ((width - w) / 2).floor())
    box = torch.stack([top, left, h, w], 1)

    u = torch.rand(n, 4, generator=g, device=dev)  # flip, jitter, grey, blur
    flip, jitter, grey = u[:, 0] < aug.flip_p, u[:, 1] < aug.jitter_p, u[:, 2] < aug.grey_p
    blurred = u[:, 3] < blur_p
    b, c, s, hue = aug.jitter
    # ColorJitter's factor ranges (brightness, contrast, saturation, hue); (1, 1, 1, 0) where jitter is off
    ranges = [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-hue, hue)]
    factors = torch.stack(
        [
            torch.where(jitter, _uniform(g, (n,), lo, hi, dev), 0.0 if k == HUE else 1.0)
            for k, (lo, hi) in enumerate(ranges)
        ],
        1,
    )
    order = torch.rand(n, 4, generator=g, device=dev).argsort(1)  # ColorJitter: a random order per call
    sigma = _uniform(g, (n,), aug.blur_sigma[0], aug.blur_sigma[1], dev)
    sigma = torch.where(blurred, sigma, 0.0)
    solarize = torch.rand(n, generator=g, device=dev) < solarize_p
    return CropParams(box, flip, factors, order, grey, sigma, solarize)


def _grey(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return r.mul(GREY[0]).add_(g, alpha=GREY[1]).add_(b, alpha=GREY[2]).unsqueeze(1)


def _linear_jitter(x: Tensor, op: Tensor, factors: Tensor) -> Tensor:
    """One of brightness/contrast/saturation per crop (``op``; :data:`NONE`: unchanged), torchvision's
    blends: ``f * x + (1 - f) * c`` with c = 0, the crop's mean grey, or its grey, clamped to [0, 1]."""
    f = torch.where(op == NONE, 1.0, factors.gather(1, op.clamp(min=0)[:, None]).squeeze(1))[:, None, None, None]
    grey = _grey(x)
    centre = torch.where(
        (op == SATURATION)[:, None, None, None],
        grey,
        torch.where((op == CONTRAST)[:, None, None, None], grey.mean((2, 3), keepdim=True), 0.0),
    )
    return (x * f).add_(centre * (1 - f)).clamp_(0.0, 1.0)


def hue_shift(x: Tensor, shift: Tensor) -> Tensor:
    """torchvision's adjust_hue (RGB -> HSV, hue + ``shift`` turns, back) for a batch with a shift per image,
    in the compact form of the HSV -> RGB map: ``max - (max - min) * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` (n = 5, 3, 1 for R, G, B). Equal to torchvision's to 2e-6 (test) in ~25
    elementwise ops on the image planes; kornia.enhance.adjust_hue is 2.8x slower on the CPU."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    d = maxc - minc
    dd = torch.where(d == 0, 1.0, d)
    # torchvision's sextant: the first channel that is the maximum decides
    h = torch.where(maxc == r, (g - b) / dd, torch.where(maxc == g, (b - r) / dd + 2.0, (r - g) / dd + 4.0))
    h6 = h.add_(6.0 + 6.0 * shift[:, None, None]).remainder_(6.0)  # hue in sextants, shifted, in [0, 6)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (h6 + n).remainder_(6.0)
        out.append(maxc - d * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(out, 1)


def colour_jitter(x: Tensor, factors: Tensor, order: Tensor, hue: bool = True) -> Tensor:
    """torchvision's ColorJitter with each crop's own factors and order, without a per-crop branch: each
    crop's linear operations before its hue shift (three slots, unused ones the identity), the hue shift of
    every crop at once (0 where jitter is off), then its operations after it. ``hue=False`` when the policy's
    hue range is 0 (torchvision then skips the operation)."""
    at = (order == HUE).to(torch.uint8).argmax(1, keepdim=True)  # where each crop's hue shift falls
    slot = torch.arange(3, device=x.device)[None]
    before = torch.where(slot < at, order[:, :3], NONE)
    after_i = at + 1 + slot
    after = torch.where(after_i <= 3, order.gather(1, after_i.clamp(max=3)), NONE)
    for k in range(3):
        x = _linear_jitter(x, before[:, k], factors)
    if hue:
        x = torch.where((factors[:, 3] != 0)[:, None, None, None], hue_shift(x, factors[:, 3]), x)
    for k in range(3):
        x = _linear_jitter(x, after[:, k], factors)
    return x


def gaussian_blur(x: Tensor, k: int, sigma: Tensor) -> Tensor:
    """torchvision's gaussian_blur (k x k, reflect padding) with a sigma per image, as two grouped 1-D
    convolutions. (kornia's gaussian_blur2d checks a sigma tensor on the host: one device wait per call.)"""
    n, c, height, width = x.shape
    half = k // 2
    t = torch.arange(k, device=x.device, dtype=x.dtype) - half
    w = torch.exp(-0.5 * (t[None] / sigma[:, None]).square())
    w = (w / w.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, k)
    y = F.pad(x, (half, half, half, half), mode="reflect").reshape(1, n * c, height + 2 * half, width + 2 * half)
    y = F.conv2d(y, w.view(n * c, 1, 1, k), groups=n * c)
    return F.conv2d(y, w.view(n * c, 1, k, 1), groups=n * c).view(n, c, height, width)


def apply_crops(
    x: Tensor,
    p: CropParams,
    size: int,
    hue: bool = True,
    blur: bool = True,
    solarize: bool = True,
    kernel: int | None = None,
    interpolation: str = "bicubic",
) -> Tensor:
    """(N, 3, H, W) float images in [0, 1] (one per crop) -> (N, 3, size, size) crops in [0, 1]; ``kernel``:
    the blur's taps (default: :func:`~ssl_bench.data.multicrop.blur_kernel` of ``size``)."""
    n, _, height, width = x.shape
    top, left, h, w = p.box.unbind(1)
    # torchvision's crop box [left, left + w) x [top, top + h) resized to size x size (pixel centres,
    # align_corners=False), the flip a mirrored x axis: one affine sampling grid for all crops
    sx = torch.where(p.flip, -w, w) / width
    zero = torch.zeros_like(sx)
    theta = torch.stack([sx, zero, (2 * left + w) / width - 1, zero, h / height, (2 * top + h) / height - 1], 1)
    grid = F.affine_grid(theta.view(n, 2, 3), [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode=interpolation, padding_mode="border", align_corners=False).clamp_(0.0, 1.0)
    x = colour_jitter(x, p.factors, p.order, hue)
    x = torch.where(p.grey[:, None, None, None], _grey(x).expand_as(x), x)
    if blur:
        blurred = gaussian_blur(x, kernel or blur_kernel(size), p.sigma.clamp(min=1e-3))
        x = torch.where((p.sigma > 0)[:, None, None, None], blurred, x)
    if solarize:
        x = torch.where(p.solarize[:, None, None, None] & (x >= SOLARIZE_AT), 1.0 - x, x)
    return x


class DeviceMultiCrop(nn.Module):
    """uint8 (B, 3, H, W) batch -> ``n_global + n_local`` normalised float crop batches (globals first)."""

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        policy: CropPolicy,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        super().__init__()
        spec = policy.spec
        if spec.n_global < 1 or spec.n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {spec}")
        self.spec, self.policy = spec, policy
        self.blurs: dict[str, bool] = {}  # Python flags: a data-dependent branch would wait for the device
        self.solarizes: dict[str, bool] = {}
        # more than two global crops alternate the two global policies (first, second, first, ...)
        kinds = {
            "global": ["global1" if i % 2 == 0 else "global2" for i in range(spec.n_global)],
            "local": ["local"] * spec.n_local,
        }
        for group, names in kinds.items():
            views = [policy.view(k) for k in names]
            self.blurs[group] = any(v.blur_p > 0 for v in views)
            self.solarizes[group] = any(v.solarize_p > 0 for v in views)
            self.register_buffer(f"{group}_blur_p", torch.tensor([v.blur_p for v in views]), persistent=False)
            self.register_buffer(f"{group}_solarize_p", torch.tensor([v.solarize_p for v in views]), persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, dev: torch.device, seed: int) -> torch.Generator:
        g = self._generators.get(dev)
        if g is None:
            g = self._generators[dev] = torch.Generator(device=dev)
        return g.manual_seed(seed)

    def group(self, x: Tensor, kind: str, g: torch.Generator) -> Tensor:
        """All crops of one kind ("global" or "local") of the float batch ``x``: (count * B, 3, size, size)."""
        blur_p, sol_p = getattr(self, f"{kind}_blur_p"), getattr(self, f"{kind}_solarize_p")
        count, b = blur_p.numel(), x.shape[0]
        size, scale = self.policy.size_scale(kind)
        a = self.policy.aug
        p = sample_crops(
            count * b, x.shape[2], x.shape[3], scale, a, blur_p.repeat_interleave(b), sol_p.repeat_interleave(b), g
        )
        src = x.expand(count, *x.shape).reshape(count * b, *x.shape[1:])  # crop k of image i at k * B + i
        return apply_crops(
            src,
            p,
            size,
            hue=a.jitter[3] > 0,
            blur=self.blurs[kind],
            solarize=self.solarizes[kind],
            kernel=blur_kernel(size, a),
            interpolation=a.interpolation,
        )

    def _floats(self, images: Tensor) -> Tensor:
        """The uint8 (B, 3, H, W) batch as floats in [0, 1]; anything else is refused."""
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} wants a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}"
            )
        return images.float().div_(255.0)

    @torch.no_grad()
    def forward(self, images: Tensor, seed: int) -> list[Tensor]:
        x = self._floats(images)
        g = self._generator(images.device, seed)
        crops: list[Tensor] = []
        for kind, count in (("global", self.spec.n_global), ("local", self.spec.n_local)):
            if count:
                out = (self.group(x, kind, g) - self.mean) / self.std
                crops += out.split(x.shape[0])  # dim-0 chunks: contiguous
        return crops
