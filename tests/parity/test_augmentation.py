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
