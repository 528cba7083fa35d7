"""The loader's crops for ``method=dino preset=paper`` against the reference's own transform object
(facebookresearch/dino ``main_dino.DataAugmentationDINO``) for fixed seeds: equal tensors."""

from __future__ import annotations

import contextlib
import types
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.config import build_config
from ssl_bench.data.multicrop import MultiCropTransform, crop_policy
from ssl_bench.engine.train import resolve
from tests.parity import harness as H


@contextlib.contextmanager
def python_random_from_torch(module) -> types.SimpleNamespace:
    """DINO's GaussianBlur and Solarization draw from Python's ``random``, the suite's from torch's generator
    (torchvision's RandomApply and the blur radius): the shim gives the reference module a ``random`` that
    reads torch's generator, so both pipelines take the same draws in the same order."""
    fake = types.SimpleNamespace(
        random=lambda: torch.rand(1).item(),
        uniform=lambda a, b: a + (b - a) * torch.rand(()).item(),
    )
    with mock.patch.object(module, "random", fake):
        yield fake


def _image() -> Image.Image:
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:256, 0:320]
    base = np.stack([x / 320, y / 256, (x + y) / 576], -1) * 200 + rng.rand(256, 320, 3) * 55
    return Image.fromarray(base.astype(np.uint8))


@pytest.mark.skipif(H.skip_reason("dino") is not None, reason=str(H.skip_reason("dino")))
def test_dino_paper_crops_equal_the_references():
    """2 global crops at 224 and 8 local at 96 for 24 seeds, every crop equal to DataAugmentationDINO's (max
    difference 1e-5 after normalisation: the same PIL operations on the same draws)."""
    main_dino, utils = H.import_reference("dino", "main_dino", "utils")
    cfg = resolve(build_config(["method=dino", "preset=paper"]))
    d = cfg.data
    # the reference's own defaults (main_dino.py:107-115); shim: its parser lists --arch choices from the
    # torch hub, which this machine cannot reach
    with mock.patch.object(torch.hub, "list", lambda *args, **kwargs: []):
        a = main_dino.get_args_parser().parse_args([])
    ref = main_dino.DataAugmentationDINO(a.global_crops_scale, a.local_crops_scale, a.local_crops_number)
    ours = MultiCropTransform(crop_policy(d))  # ImageNet mean/std, as main_dino.py normalises
    img = _image()
    with python_random_from_torch(utils):
        for seed in range(24):
            torch.manual_seed(seed)
            want = ref(img)
            torch.manual_seed(seed)
            got = ours(img)
            assert len(got) == len(want) == 2 + d.n_local
            for i, (a, b) in enumerate(zip(got, want)):
                assert a.shape == b.shape, (seed, i)
                diff = (a - b).abs().max().item()
                assert diff < 1e-5, f"seed {seed}, crop {i}: differs by {diff:.3g}"


def _swav_script_args() -> dict[str, list[str]]:
    """The flags of swav's scripts/swav_800ep_pretrain.sh (``--name v1 v2 ...`` lines)."""
    text = (H.references() / "swav" / "scripts" / "swav_800ep_pretrain.sh").read_text()  # type: ignore[operator]
    flags: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().rstrip("\\").split()
        if parts and parts[0].startswith("--"):
            flags[parts[0][2:]] = parts[1:]
    return flags


@pytest.mark.skipif(H.skip_reason("swav") is not None, reason=str(H.skip_reason("swav")))
def test_swav_paper_crops_equal_the_references(tmp_path):
    """2 crops at 224 and 6 at 96 of src/multicropdataset.py MultiCropDataset with the 800-epoch script's
    arguments, for 12 seeds: equal to the loader's. Shims: its blur draws from NumPy's and Python's
    generators (both read torch's here). Normalisation: SwAV's code divides red by 0.228 where ImageNet's
    statistic (the suite's for imagefolder data) is 0.229, a property of the data statistics rather than of
    the augmentation, so the suite's transform is given SwAV's mean and std here."""
    with H.apex_larc_only():
        (mcd,) = H.import_reference("swav", "src.multicropdataset")
    (tmp_path / "a").mkdir()
    _image().save(tmp_path / "a" / "0.png")
    f = _swav_script_args()
    ref = mcd.MultiCropDataset(
        str(tmp_path),
        [int(v) for v in f["size_crops"]],
        [int(v) for v in f["nmb_crops"]],
        [float(v) for v in f["min_scale_crops"]],
        [float(v) for v in f["max_scale_crops"]],
    )
    cfg = resolve(build_config(["method=swav", "preset=paper"]))
    ours = MultiCropTransform(crop_policy(cfg.data), (0.485, 0.456, 0.406), (0.228, 0.224, 0.225))
    img = ref.loader(str(tmp_path / "a" / "0.png"))
    fake_np = types.SimpleNamespace(random=types.SimpleNamespace(rand=lambda: torch.rand(1).item()))
    fake_random = types.SimpleNamespace(uniform=lambda a, b: a + (b - a) * torch.rand(()).item())
    with mock.patch.object(mcd, "np", fake_np), mock.patch.object(mcd, "random", fake_random):
        for seed in range(12):
            torch.manual_seed(seed)
            want = ref[0]
            torch.manual_seed(seed)
            got = ours(img)
            assert len(got) == len(want) == 8
            for i, (a, b) in enumerate(zip(got, want)):
                diff = (a - b).abs().max().item()
                assert diff < 1e-5, f"seed {seed}, crop {i}: differs by {diff:.3g}"
