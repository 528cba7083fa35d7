"""The loader's crops against the references whose pipelines flip last: MoCo v2 ``--aug-plus`` and MoCo v3
(both views), as each ``main_moco.main_worker`` builds its ``TwoCropsTransform``, and solo-learn's CIFAR
pipelines (``build_transform_pipeline`` + ``NCropAugmentation`` of the augmentation file each method's
script names).

Those pipelines flip after colour, greyscale, blur and solarisation; the suite flips right after the crop
(as DINO does). The flip is an independent coin and commutes with each of those operations, so both orders
give the same distribution of crops; they only take their random draws in another order. The tests show
both halves: (1) with the flip made certain (no draw), the reference's own order and the flip moved after
the crop give equal tensors for every seed; (2) with the reference's flip moved after its crop (the same
transform objects, nothing else changed), its crops equal the suite's for every seed."""

from __future__ import annotations

import contextlib
import io
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torchvision.transforms as tvt
import torchvision.transforms.functional as tvf
import yaml
from PIL import Image

from ssl_bench.config import build_config
from ssl_bench.data.datasets import build_datasets
from ssl_bench.data.multicrop import MultiCropTransform, crop_policy
from ssl_bench.engine.train import resolve
from tests.parity import harness as H

SEEDS = 16


def torch_uniform() -> types.SimpleNamespace:
    """A ``random`` module for the references' blur (``random.uniform``), reading torch's generator as the
    suite's blur does."""
    return types.SimpleNamespace(uniform=lambda a, b: a + (b - a) * torch.rand(()).item())


def _image(h: int, w: int) -> Image.Image:
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (h + w)], -1) * 200 + rng.rand(h, w, 3) * 55
    return Image.fromarray(base.astype(np.uint8))


def _flip_at(compose: tvt.Compose) -> int:
    (i,) = [i for i, t in enumerate(compose.transforms) if isinstance(t, tvt.RandomHorizontalFlip)]
    assert isinstance(compose.transforms[0], tvt.RandomResizedCrop), compose
    return i


def flip_after_crop(compose: tvt.Compose) -> tvt.Compose:
    """The same transform objects, the flip moved from its place to right after the crop."""
    ts = list(compose.transforms)
    flip = ts.pop(_flip_at(compose))
    return tvt.Compose([ts[0], flip, *ts[1:]])


def flip_certain(compose: tvt.Compose) -> tvt.Compose:
    """The flip replaced, in place, by a flip that always happens and takes no random draw."""
    ts = list(compose.transforms)
    ts[_flip_at(compose)] = tvf.hflip
    return tvt.Compose(ts)


def assert_equal_crops(ref, ours, img, n: int, where: str) -> None:
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        want = ref(img)
        torch.manual_seed(seed)
        got = ours(img)
        assert len(got) == len(want) == n, (where, len(got), len(want))
        for i, (a, b) in enumerate(zip(got, want)):
            assert a.shape == b.shape, (where, seed, i)
            diff = (a - b).abs().max().item()
            assert diff < 1e-5, f"{where}: seed {seed}, crop {i} differs by {diff:.3g}"


def assert_flip_commutes(pipelines: list[tvt.Compose], img, where: str) -> None:
    """Half (1): each pipeline in its own order and with the flip moved, both flips certain, draw for draw."""
    for j, p in enumerate(pipelines):
        assert _flip_at(p) > 1, f"{where} pipeline {j} flips right after its crop already"
        certain, moved = flip_certain(p), flip_certain(flip_after_crop(p))
        assert_equal_crops(lambda x: [certain(x)], lambda x: [moved(x)], img, 1, f"{where} pipeline {j}")


class _Built(Exception):
    """Raised by the stand-in ImageFolder once main_worker has built its transform."""


def moco_two_crops(repo: str, argv: list[str], tmp_path: Path):
    """The ``TwoCropsTransform`` that ``main_moco.main_worker`` of ``repo`` builds for ``argv``, and the
    reference's loader module. Shims: the harness's 1-process group stands in for the one main_worker
    starts, a DDP stand-in, timm 0.4 names, and an ImageFolder that keeps its transform and stops main_worker there; a
    ResNet-18 (the augmentation does not depend on the backbone)."""
    with H.old_timm_names():  # moco-v3's vits.py, which its main_moco.py imports
        main_moco, loader = H.import_reference(repo, "main_moco", "moco.loader")
    args = main_moco.parser.parse_args([*argv, "-a", "resnet18", str(tmp_path)])
    args.distributed, args.rank, args.world_size = True, 0, 1
    built: dict = {}

    def image_folder(root, transform):
        built["transform"] = transform
        raise _Built

    with contextlib.ExitStack() as stack:
        stack.enter_context(H.cpu_single_process())
        stack.enter_context(mock.patch.object(dist, "init_process_group", lambda *a, **k: None))
        stack.enter_context(mock.patch.object(torch.nn.parallel, "DistributedDataParallel", H.DDPShim))
        stack.enter_context(mock.patch.object(main_moco.datasets, "ImageFolder", image_folder))
        if hasattr(main_moco, "SummaryWriter"):  # moco-v3 opens a TensorBoard writer on rank 0
            stack.enter_context(mock.patch.object(main_moco, "SummaryWriter", lambda *a, **k: None))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))  # it prints the model
        with pytest.raises(_Built):
            main_moco.main_worker(None, 1, args)
    return built["transform"], loader


def ours(overrides: list[str], mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> MultiCropTransform:
    cfg = resolve(build_config(overrides))
    assert cfg.data.n_global == 2 and cfg.data.n_local == 0, overrides
    return MultiCropTransform(crop_policy(cfg.data), mean, std)


@pytest.mark.skipif(H.skip_reason("moco") is not None, reason=str(H.skip_reason("moco")))
def test_moco_v2_paper_crops_equal_the_references(tmp_path):
    """MoCo v2 (moco@7397dfe main_moco.py:326-352 with --aug-plus, the README's pre-training command):
    one pipeline for both views, the flip last."""
    two, loader = moco_two_crops("moco", ["--aug-plus", "--mlp", "--cos"], tmp_path)
    base = two.base_transform
    img = _image(256, 320)
    with mock.patch.object(loader, "random", torch_uniform()):
        assert_flip_commutes([base], img, "moco v2")
        ref = loader.TwoCropsTransform(flip_after_crop(base))
        assert_equal_crops(ref, ours(["method=moco", "preset=paper"]), img, 2, "moco v2")


@pytest.mark.skipif(H.skip_reason("moco-v3") is not None, reason=str(H.skip_reason("moco-v3")))
@pytest.mark.parametrize(
    "preset,argv",
    [
        ("paper", []),  # CONFIG.md ViT recipes: --crop-min left at main_moco.py:117's 0.08
        ("paper-resnet50", ["--crop-min=.2"]),  # CONFIG.md:15
    ],
)
def test_moco_v3_paper_crops_equal_the_references(tmp_path, preset, argv):
    """MoCo v3 (moco-v3@c349e6e main_moco.py:262-290): BYOL's asymmetric pair, blur 1.0 / 0.1, solarise
    0 / 0.2, the flip last in each."""
    two, loader = moco_two_crops("moco-v3", argv, tmp_path)
    first, second = two.base_transform1, two.base_transform2
    img = _image(256, 320)
    with mock.patch.object(loader, "random", torch_uniform()):
        assert_flip_commutes([first, second], img, f"moco v3 {preset}")
        ref = loader.TwoCropsTransform(flip_after_crop(first), flip_after_crop(second))
        assert_equal_crops(ref, ours(["method=moco_v3", f"preset={preset}"]), img, 2, f"moco v3 {preset}")


# method -> its solo-learn CIFAR script
SOLO_SCRIPTS = {
    "simclr": "simclr",
    "byol": "byol",
    "moco": "mocov2plus",
    "moco_v3": "mocov3",
    "swav": "swav",
    "dino": "dino",
}


def solo_augmentations(script: str) -> list[dict]:
    """The augmentation pipelines (the ``augmentations:`` file in the ``defaults`` list) of solo-learn's
    scripts/pretrain/cifar/<script>.yaml."""
    folder = H.references() / "solo-learn" / "scripts" / "pretrain" / "cifar"  # type: ignore[operator]
    defaults = yaml.safe_load((folder / f"{script}.yaml").read_text())["defaults"]
    (name,) = [d["augmentations"] for d in defaults if isinstance(d, dict) and "augmentations" in d]
    return yaml.safe_load((folder / "augmentations" / name).read_text())


@pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))
@pytest.mark.parametrize("method", sorted(SOLO_SCRIPTS))
def test_cifar10_crops_equal_solo_learns(tmp_path, method):
    """``method=M preset=cifar10`` against solo-learn@9187ea3 main_pretrain.py:132-138's transform for the
    method's CIFAR script: RandomResizedCrop(32, bicubic), jitter, greyscale, PIL blur, solarisation, the
    flip last, CIFAR-10 statistics (the suite's come from its cifar10 dataset, here an ImageFolder tree)."""
    import omegaconf

    with H.lightning_alias():
        (pd,) = H.import_reference("solo-learn", "solo.data.pretrain_dataloader")
    augs = solo_augmentations(SOLO_SCRIPTS[method])
    pipelines = [pd.build_transform_pipeline("cifar10", omegaconf.OmegaConf.create(a)) for a in augs]
    for split in ("train", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
        _image(32, 32).save(tmp_path / split / "a" / "0.png")
    overrides = [f"method={method}", "preset=cifar10", f"data.root={tmp_path}"]
    cfg = resolve(build_config(overrides))
    splits = build_datasets(cfg.dataset, cfg.data)
    img = _image(32, 32)
    with mock.patch.object(pd, "random", torch_uniform()):
        assert_flip_commutes(pipelines, img, f"solo-learn {method}")
        moved = [pd.NCropAugmentation(flip_after_crop(p), a["num_crops"]) for p, a in zip(pipelines, augs)]
        ref = pd.FullTransformPipeline(moved)
        assert_equal_crops(ref, ours(overrides, splits.mean, splits.std), img, 2, f"solo-learn {method}")
