"""Image + binary foreground mask pairs for the segmentation evaluations."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ssl_bench.data.datasets import load_image
from ssl_bench.errors import UserError

IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")


class MaskPairs(Dataset):
    """``root/images/NAME.*`` with ``root/masks/NAME.*`` (non-zero = foreground), sorted by name."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise UserError(f"eval.seg_root {str(root)!r} needs images/ and masks/ folders")
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMG_EXT}
        self.pairs = [(p, masks[p.stem]) for p in sorted(img_dir.iterdir())
                      if p.suffix.lower() in IMG_EXT and p.stem in masks]
        if not self.pairs:
            raise UserError(f"eval.seg_root {str(root)!r}: no image in images/ has a mask of the same name in masks/")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[Image.Image, np.ndarray]:
        img_path, mask_path = self.pairs[i]
        img = load_image(str(img_path))
        try:
            mask = np.array(Image.open(mask_path).convert("L")) > 127
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
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return x, torch.from_numpy(np.array(m) > 127)
