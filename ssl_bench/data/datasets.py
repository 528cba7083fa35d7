"""Registered datasets. Each returns (train, test) of (PIL image, label) pairs.

``digits`` is embedded (scikit-learn's bundled 8x8 digits, upsampled), so the suite runs with no
download. ``cifar10``/``cifar100``/``stl10`` accept torchvision's own format or an ImageFolder tree
with ``train/`` and ``test/`` (or ``val/``, as ImageNet ships; ``data.train_split`` / ``data.test_split``
name others); ``imagefolder`` takes any such tree, and a train folder of images without class
sub-folders as unlabelled pre-training data, evaluated on ``eval.dataset``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
import os
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
import torch

from ssl_bench.config import DataConfig
from ssl_bench.errors import UserError
from ssl_bench.registry import DATASETS, register_dataset

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class SizedDataset(Protocol):
    """What the suite needs of a dataset: a length and (image, label) items (torch's ``Dataset`` declares
    no ``__len__``)."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Any: ...


@dataclass
class DataSplits:
    """Pre-training images (``train``), the labelled images the evaluations fit on (``bank``: the k-NN
    bank and the probes' training set; ``train`` unless evaluating on another dataset) and held-out
    ``test`` images."""

    train: SizedDataset
    test: SizedDataset
    num_classes: int
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    bank: SizedDataset | None = None
    labelled: bool = True  # False: ``train`` has no labels (pre-training only)

    def __post_init__(self) -> None:
        if self.bank is None and self.labelled:
            self.bank = self.train


class ListDataset(Dataset):
    """In-memory (image, label) pairs."""

    def __init__(self, images: list, targets: list[int]) -> None:
        self.images, self.targets = images, list(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


class TransformDataset(Dataset):
    """Apply ``transform`` to the image of each (image, label) pair."""

    def __init__(self, base: SizedDataset, transform: Callable) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        return self.transform(img), label


class SubsetDataset(ListDataset):
    def __init__(self, base: SizedDataset, indices: list[int], targets: list[int]) -> None:
        self.base, self.indices, self.targets = base, indices, targets

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]


def load_image(path: str) -> Image.Image:
    """PIL loader whose error names the file (ImageFolder's default does not)."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")
    except Exception as err:  # PIL raises many types for bad files
        raise UserError(f"cannot read image file {path}: {type(err).__name__}: {err}") from None


def targets_of(ds: SizedDataset) -> list[int]:
    t = getattr(ds, "targets", None)
    if t is None:
        t = getattr(ds, "labels", None)
    if t is None:
        t = [ds[i][1] for i in range(len(ds))]
    return [int(x) for x in t]


def per_class_subset(ds: SizedDataset, n: int, start: int = 0) -> SizedDataset:
    """Items ``start .. start+n-1`` of each class in dataset order (ImageFolder: sorted file names)."""
    if n <= 0 and start <= 0:
        return ds
    targets = targets_of(ds)
    counts: dict[int, int] = {}
    keep = []
    for i, t in enumerate(targets):
        c = counts.get(t, 0)
        counts[t] = c + 1
        if c >= start and (n <= 0 or c < start + n):
            keep.append(i)
    return SubsetDataset(ds, keep, [targets[i] for i in keep])


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class UnlabelledFolder(ListDataset):
    """Every image file under a folder (sorted, recursively) with label 0: pre-training data only."""

    def __init__(self, root: Path) -> None:
        self.files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        self.targets = [0] * len(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return load_image(self.files[i]), 0


def _is_unlabelled(path: Path) -> bool:
    """Images directly in the folder and no sub-folders: no classes to read labels from."""
    entries = list(path.iterdir())
    return not any(e.is_dir() for e in entries) and any(e.suffix.lower() in IMAGE_EXTENSIONS for e in entries)


def check_no_symlink_loop(path: Path) -> None:
    """ImageFolder follows symlinks: one that points to a folder above it (``ln -s .. ROOT/train/a/loop``)
    would read the same images again at every depth. Refused, naming the link."""
    seen: set[str] = set()
    for dirpath, dirnames, _ in os.walk(path, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            raise UserError(
                f"data.root: {dirpath!r} is a symlink loop (it leads back to {real!r}, already read); "
                "remove the link or point it outside the tree"
            )
        seen.add(real)
        dirnames.sort()


def _image_folder(root: Path, split: str, what: str = "train") -> SizedDataset:
    path = root / split
    if not path.is_dir():
        found = sorted(p.name + "/" for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        key = "data.train_split" if what == "train" else "data.test_split"
        raise UserError(f"data.root {str(root)!r} has no {split}/ folder for the {what} split (it holds "
                        f"{', '.join(found) or 'no folders'}); name the folder with {key}=NAME")
    check_no_symlink_loop(path)
    try:
        from torchvision.datasets import ImageFolder  # torchvision loads in ~1 s: only when data is read

        return ImageFolder(str(path), loader=load_image)
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"cannot read ImageFolder {str(path)!r}: {err}") from None


def test_split_name(root: Path, cfg: DataConfig) -> str:
    """``data.test_split``, or test/ when it exists, else val/ (ImageNet's layout)."""
    if cfg.test_split:
        return cfg.test_split
    return "test" if (root / "test").is_dir() or not (root / "val").is_dir() else "val"


def _same_classes(train, test, root: Path, names: tuple[str, str] = ("train", "test")):
    """ImageFolder numbers classes by their sorted names per folder: the train and test folders must hold
    the same class names, or a test class would be scored as another train class."""
    if train.classes != test.classes:
        tr, te = names
        missing = sorted(set(train.classes) - set(test.classes))
        extra = sorted(set(test.classes) - set(train.classes))
        parts = ([f"{te}/ lacks {', '.join(missing[:5])}"] if missing else []) + \
                ([f"{te}/ has {', '.join(extra[:5])} that {tr}/ lacks"] if extra else [])
        raise UserError(f"data.root {str(root)!r}: {tr}/ and {te}/ hold different classes ({'; '.join(parts)})")
    return train, test


def folder_splits(root: Path, cfg: DataConfig) -> tuple[SizedDataset, SizedDataset | None]:
    """(train, test) ImageFolders of ``root``; an unlabelled train folder gives (UnlabelledFolder, None)."""
    train_dir = root / cfg.train_split
    if train_dir.is_dir() and _is_unlabelled(train_dir):
        return UnlabelledFolder(train_dir), None
    test = test_split_name(root, cfg)
    names = (cfg.train_split, test)
    return _same_classes(_image_folder(root, cfg.train_split), _image_folder(root, test, "test"), root, names)


def _require_root(cfg: DataConfig, name: str) -> Path:
    if not cfg.root:
        raise UserError(f"dataset={name} needs data.root=PATH (a folder with train/ and test/, or torchvision's files)")
    root = Path(cfg.root).expanduser()
    if not root.exists() and not cfg.download:
        raise UserError(f"data.root {cfg.root!r} does not exist (set data.download=true to fetch {name} there)")
    return root


@register_dataset("digits")
def digits(cfg: DataConfig) -> DataSplits:
    """Embedded default: scikit-learn's 1,797 8x8 digits, 80/20 split with a fixed seed, no download."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    imgs = (d.images / 16.0 * 255).clip(0, 255).astype(np.uint8)
    pil = [Image.fromarray(im, mode="L").resize((32, 32), Image.Resampling.BICUBIC).convert("RGB") for im in imgs]
    idx = np.arange(len(pil))
    tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=d.target)
    train = ListDataset([pil[i] for i in tr], [int(d.target[i]) for i in tr])
    test = ListDataset([pil[i] for i in te], [int(d.target[i]) for i in te])
    return DataSplits(train, test, 10, mean=(0.25,) * 3, std=(0.35,) * 3)


def _torchvision_or_folder(name: str, tv_name: str, num_classes: int, mean, std, train_kw, test_kw):
    def build(cfg: DataConfig) -> DataSplits:
        root = _require_root(cfg, name)
        if (root / cfg.train_split).is_dir() and (root / test_split_name(root, cfg)).is_dir():
            train, test = folder_splits(root, cfg)
            if test is None:
                return DataSplits(train, ListDataset([], []), 0, mean, std, labelled=False)
        else:
            import torchvision.datasets

            tv_cls = getattr(torchvision.datasets, tv_name)
            try:
                train = tv_cls(str(root), download=cfg.download, **train_kw)
                test = tv_cls(str(root), download=cfg.download, **test_kw)
            except RuntimeError as err:
                raise UserError(
                    f"data.root {cfg.root!r} holds neither train/+test/ folders nor torchvision's {name} files ({err})"
                ) from None
        return DataSplits(train, test, num_classes, mean, std)

    build.__doc__ = f"{name}: torchvision's format (data.download=true fetches it) or an ImageFolder train/+test/ tree."
    return build


register_dataset("cifar10")(
    _torchvision_or_folder(
        "cifar10", "CIFAR10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), {"train": True}, {"train": False}
    )
)
register_dataset("cifar100")(
    _torchvision_or_folder(
        "cifar100", "CIFAR100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), {"train": True}, {"train": False}
    )
)
register_dataset("stl10")(
    _torchvision_or_folder(
        "stl10", "STL10", 10, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), {"split": "train"}, {"split": "test"}
    )
)


@register_dataset("imagefolder")
def imagefolder(cfg: DataConfig) -> DataSplits:
    """Any ImageFolder tree with train/ and test/ or val/ (class sub-folders), or unlabelled images, ImageNet statistics."""
    root = _require_root(cfg, "imagefolder")
    train, test = folder_splits(root, cfg)
    if test is None:
        return DataSplits(train, ListDataset([], []), 0, labelled=False)
    return DataSplits(train, test, len(getattr(train, "classes")))  # an ImageFolder


LABELLED_EVALS = ("knn", "linear")  # evaluations that need the labels of a bank and of test images


def build_datasets(name: str, cfg: DataConfig, evals: Sequence[str] = (), eval_dataset: str | None = None,
                   eval_root: str | None = None) -> DataSplits:
    """Build the named dataset and apply the per-class subsets of ``cfg``; with ``eval_dataset``, the
    evaluations' bank and test images come from that dataset (at ``eval_root``), normalised as the
    pre-training data is."""
    if eval_root and not eval_dataset:
        raise UserError("eval.data_root needs eval.dataset=NAME (the labelled dataset found there)")
    splits = _build_one(name, cfg, labelled_needed=False)
    if eval_dataset:
        other = _build_one(eval_dataset, replace(cfg, root=eval_root, train_split="train", test_split=None,
                                                 val_per_class=0), labelled_needed=True, role="eval.dataset")
        splits = DataSplits(splits.train, other.test, other.num_classes, splits.mean, splits.std, bank=other.bank)
        log.info("evaluating on %s: %d bank, %d test images", eval_dataset, len(other.train), len(splits.test))
    elif not splits.labelled and any(e in LABELLED_EVALS for e in evals):
        raise UserError(f"data.root {cfg.root!r} holds unlabelled images (no class sub-folders): the "
                        f"{'/'.join(e for e in evals if e in LABELLED_EVALS)} evaluation needs labels; name a labelled "
                        "dataset with eval.dataset=NAME eval.data_root=PATH")
    return splits


def _build_one(name: str, cfg: DataConfig, labelled_needed: bool, role: str = "dataset") -> DataSplits:
    splits = DATASETS.get(name).obj(cfg)
    if not splits.labelled:
        if labelled_needed:
            raise UserError(f"{role}={name} at {cfg.root!r} holds unlabelled images: evaluations need class "
                            "sub-folders")
        splits.train = per_class_subset(splits.train, cfg.train_per_class)
        if len(splits.train) == 0:
            raise UserError(f"dataset {name!r} at {cfg.root!r} has no training images")
        log.info("dataset %s: %d unlabelled train images", name, len(splits.train))
        return splits
    if cfg.val_per_class > 0:
        # Tuning split: evaluate on train images the pre-training subset never sees, never on test/.
        if cfg.train_per_class <= 0:
            raise UserError("data.val_per_class needs data.train_per_class > 0 (validation images come after them)")
        splits.test = per_class_subset(splits.train, cfg.val_per_class, start=cfg.train_per_class)
    else:
        splits.test = per_class_subset(splits.test, cfg.test_per_class)
    splits.train = per_class_subset(splits.train, cfg.train_per_class)
    splits.bank = splits.train
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise UserError(f"dataset {name!r} at {cfg.root!r} has no images in train or test")
    log.info("dataset %s: %d train, %d test images", name, len(splits.train), len(splits.test))
    return splits


def run_datasets(cfg) -> DataSplits:
    """The datasets of a run config: ``dataset`` / ``data.*``, evaluated on ``eval.dataset`` when set."""
    return build_datasets(cfg.dataset, cfg.data, cfg.eval.evals, cfg.eval.dataset, cfg.eval.data_root)


def _resize(size: int, crop_fraction: float, interpolation: str) -> list:
    """Resize the short side to ``size / crop_fraction`` (DINO: 256 for 224), then centre-crop ``size``."""
    from torchvision.transforms import v2 as T

    mode = T.InterpolationMode.BICUBIC if interpolation == "bicubic" else T.InterpolationMode.BILINEAR
    return [T.Resize(int(round(size / crop_fraction)), interpolation=mode, antialias=True), T.CenterCrop(size)]


class EvalImage:
    """No augmentation, uint8 out: resize the short side to ``size / crop_fraction`` and centre-crop
    ``size``, as a (C, H, W) uint8 tensor. An RGB PIL image already ``size`` x ``size`` with no crop margin
    (CIFAR at 32 px) takes a direct copy (faster than the v2 pipeline, same pixels). Normalise per batch
    on the device with :func:`normalize_batch`."""

    def __init__(self, size: int, crop_fraction: float = 1.0, interpolation: str = "bilinear") -> None:
        from torchvision.transforms import v2 as T

        self.size = size
        self.direct = crop_fraction == 1.0
        self.slow = T.Compose([T.ToImage(), *_resize(size, crop_fraction, interpolation)])

    def __call__(self, img) -> torch.Tensor:
        if self.direct and isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (self.size, self.size):
            return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
        return self.slow(img).as_subclass(torch.Tensor)


def normalize_batch(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                    std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float normalised, the same arithmetic as ``eval_transform`` per image."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)  # no copy when already there
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.float().div_(255.0).sub_(m).div_(s)


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float], crop_fraction: float = 1.0,
                   interpolation: str = "bilinear") -> Any:
    """No augmentation: resize the short side to ``size / crop_fraction``, centre crop, normalise."""
    from torchvision.transforms import v2 as T

    return T.Compose(
        [
            T.ToImage(),
            *_resize(size, crop_fraction, interpolation),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean, std),
        ]
    )
