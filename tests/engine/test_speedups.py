"""Each speed option computes the same thing as the plain path: channels_last ResNets, uint8 crops
normalised on the device, and ``compile=true`` (compiled engine step vs eager); and keep_cpu_memory
stops the page faults it is for."""

import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.backbones import build_backbone
from ssl_bench.config import build_config
from ssl_bench.data.multicrop import CropPolicy, MultiCropTransform, ViewSpec
from ssl_bench.engine.train import build_method, device_normalizer, make_optimizer, make_train_step, resolve
from tests.conftest import TINY
from tests.methods.test_methods import _views

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def test_channels_last_resnet_matches_contiguous():
    cfgs = [build_config(["backbone=resnet18", f"backbone.channels_last={c}"]).backbone for c in (True, False)]
    torch.manual_seed(0)
    nhwc = build_backbone(cfgs[0]).eval()
    nchw = build_backbone(cfgs[1]).eval()
    nchw.load_state_dict(nhwc.state_dict())
    assert nhwc.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert nchw.model.conv1.weight.is_contiguous()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = nhwc(x), nchw(x)
        pa, pb = nhwc.patch_features(x), nchw.patch_features(x)
    assert a.shape == (4, 512) and torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    assert torch.allclose(pa, pb, atol=1e-4, rtol=1e-4)


def test_uint8_crops_normalised_on_device_equal_float_crops():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    spec = ViewSpec(2, 2)
    outs = []
    for normalize in (True, False):
        t = MultiCropTransform(CropPolicy(spec, 32, 16), mean=MEAN, std=STD, normalize=normalize)
        torch.manual_seed(3)  # the same random crops and jitter for both
        outs.append(t(img))
    floats, uint8s = outs
    norm = device_normalizer(MEAN, STD, torch.device("cpu"))
    for f, u in zip(floats, uint8s):
        assert u.dtype == torch.uint8 and f.dtype == torch.float32 and u.shape == f.shape
        torch.testing.assert_close(norm(u[None])[0], f, rtol=0, atol=1e-6)


def test_engine_step_takes_uint8_views():
    cfg = resolve(build_config(TINY + ["method=simclr", "data.n_local=0"]))
    losses = []
    for uint8 in (False, True):
        torch.manual_seed(0)
        m = build_method(cfg)
        step = make_train_step(cfg, m, make_optimizer(cfg.optim, m), 10, torch.device("cpu"), (MEAN, STD))
        g = torch.Generator().manual_seed(1)
        raw = [torch.randint(0, 256, (8, 3, 16, 16), generator=g, dtype=torch.uint8) for _ in range(2)]
        views = raw if uint8 else [device_normalizer(MEAN, STD, torch.device("cpu"))(v) for v in raw]
        losses.append(step(views, 0, 0)[0]["loss"].item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_uint8_views_without_mean_std_are_refused():
    cfg = resolve(build_config(TINY + ["method=simclr"]))
    m = build_method(cfg)
    step = make_train_step(cfg, m, make_optimizer(cfg.optim, m), 10, torch.device("cpu"))
    with pytest.raises(ValueError, match="mean_std"):
        step([torch.zeros(4, 3, 16, 16, dtype=torch.uint8)] * 2, 0, 0)


def test_compiled_step_equals_eager():
    """compile=true: two DINO engine steps (multi-crop: two resolutions, teacher under no_grad) give the
    eager losses and weights within float tolerance, and the checkpoint keys are unchanged."""
    base = TINY + [
        "method=dino",
        "method.out_dim=64",
        "method.hidden_dim=32",
        "method.bottleneck_dim=16",
        "data.n_local=2",
    ]
    results = []
    for compiled in (False, True):
        cfg = resolve(build_config(base + [f"compile={compiled}"]))
        torch.manual_seed(0)
        m = build_method(cfg)
        m.train()
        step = make_train_step(cfg, m, make_optimizer(cfg.optim, m), 10, torch.device("cpu"))
        losses = [step(_views(2, b=8, seed=s), s, 0)[0]["loss"].item() for s in range(2)]
        results.append((losses, m.state_dict()))
    (l_eager, sd_eager), (l_comp, sd_comp) = results
    assert sd_eager.keys() == sd_comp.keys()
    assert l_comp == pytest.approx(l_eager, rel=1e-4, abs=1e-4)
    for k in sd_eager:
        if sd_eager[k].is_floating_point():
            assert torch.allclose(sd_comp[k], sd_eager[k], atol=1e-4, rtol=1e-3), k


_FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from ssl_bench.engine.allocator import keep_freed_memory
    assert keep_freed_memory()
def step():  # the big activations of a grouped multi-crop step: tensors above glibc's 32 MiB mmap cap
    xs = [torch.ones(mib * 2**20 // 4) for mib in (40, 51, 40, 13)]
    del xs
for _ in range(6):  # warm-up: the heap grows to the step's peak (freed blocks coalesce within a few steps)
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_keep_cpu_memory_stops_page_faults_of_repeated_large_tensors():
    """keep_cpu_memory (on by default): after warm-up, six steps that each make and free 144 MiB of large
    tensors fault in less than one step's worth of pages in all (the heap is reused); with glibc's defaults
    every step maps, faults in and unmaps the 131 MiB above 32 MiB again."""
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True
            ).stdout.split()[-1]
        )
        for mode in ("default", "keep")
    }
    pages_per_step = (40 + 51 + 40) * 2**20 // 4096
    assert faults["default"] >= 6 * pages_per_step * 0.9, faults
    assert faults["keep"] < pages_per_step // 2, faults


def test_trainer_applies_keep_cpu_memory_unless_switched_off(monkeypatch):
    from ssl_bench.engine import setup
    from ssl_bench.engine.train import Trainer

    calls = []
    monkeypatch.setattr(setup, "keep_freed_memory", lambda: calls.append(1))
    Trainer(build_config(TINY + ["method=simclr"]))
    assert len(calls) == 1
    Trainer(build_config(TINY + ["method=simclr", "keep_cpu_memory=false"]))
    assert len(calls) == 1
