"""Image + binary foreground mask pairs for the segmentation evaluations.

The one rule for a mask file: a pixel is foreground when its (greyscale) value is above half the
mask's largest value, so 0/1, 0/255 and JPEG-noisy masks all read as intended; an all-zero mask has
no foreground.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ssl_bench.data.datasets import load_image
from ssl_bench.errors import UserError

IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")
log = logging.getLogger(__name__)


def foreground(mask: np.ndarray) -> np.ndarray:
    """The module's rule: above half the mask's largest value."""
    top = int(mask.max()) if mask.size else 0
    return mask > top / 2 if top > 0 else np.zeros(mask.shape, bool)


class MaskPairs(Dataset):
    """``root/images/NAME.*`` with ``root/masks/NAME.*`` (foreground by the module's rule), sorted by
    name; images without a mask are left out with a log line."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise UserError(f"eval.seg_root {str(root)!r} needs images/ and masks/ folders")
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMG_EXT}
        images = [p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMG_EXT]
        self.pairs = [(p, masks[p.stem]) for p in images if p.stem in masks]
        missing = [p.name for p in images if p.stem not in masks]
        if missing:
            log.warning("eval.seg_root %s: %d image(s) without a mask of the same name left out (%s%s)", root,
                        len(missing), ", ".join(missing[:3]), ", ..." if len(missing) > 3 else "")
        if not self.pairs:
            raise UserError(f"eval.seg_root {str(root)!r}: no image in images/ has a mask of the same name in masks/")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        img = load_image(str(img_path))
        try:
            mask = foreground(np.array(Image.open(mask_path).convert("L")))
        except Exception as err:
            raise UserError(f"cannot read mask file {mask_path}: {err}") from None
        return img, mask


class VOCForeground(Dataset):
    """PASCAL VOC 2012 segmentation (torchvision), any object class = foreground, 255 ignored as bg."""

    def __init__(self, root: str | Path, download: bool = False) -> None:
        from torchvision.datasets import VOCSegmentation

        try:
            self.ds = VOCSegmentation(str(root), year="2012", image_set="val", download=download)
        except RuntimeError as err:
            raise UserError(f"cannot open VOC 2012 under {str(root)!r}: {err}") from None

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        img, target = self.ds[i]
        t = np.array(target)
        return img.convert("RGB"), (t > 0) & (t < 255)


def square_resize(img: Image.Image, mask: np.ndarray, size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize image and mask to size x size (the attention grid must cover the whole mask)."""
    from torchvision.transforms import v2 as T

    x = T.Compose([T.ToImage(), T.Resize((size, size), antialias=True), T.ToDtype(torch.float32, scale=True),
                   T.Normalize(mean, std)])(img)
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return x, torch.from_numpy(np.array(m) > 127)
