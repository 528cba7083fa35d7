"""The engine step makes no host-device synchronisation on a GPU (the performance issue: "no host-device
syncs in the step"), for every method, with crops drawn on the device or handed in as a crop list: with
``torch.cuda.set_sync_debug_mode("error")`` any ``.item()``, ``nonzero``, boolean-mask index or blocking
copy inside the step raises. CUDA only (skipped on the CPU machines; ``benchmarks/gpu_check.sh`` runs it)."""

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.train import build_method, make_optimizer, make_train_step, resolve
from tests.conftest import TINY

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
METHODS = {
    "dino": ["method=dino", "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16", "data.n_local=2"],
    "simclr": ["method=simclr"],
    "byol": ["method=byol"],
    "moco": ["method=moco"],
    "moco_v3": ["method=moco", "method.version=3"],
    "swav": ["method=swav", "data.n_local=2"],
}


def run_steps(over: list[str], dev: torch.device, steps: int, checked_from: int):
    """``steps`` engine steps on a fixed uint8 batch already on ``dev``; from step ``checked_from`` on, under
    CUDA's sync debug mode "error" when ``dev`` is a GPU. Returns the last step's loss."""
    cfg = resolve(build_config(over))
    torch.manual_seed(0)
    m = build_method(cfg).to(dev)
    step = make_train_step(cfg, m, make_optimizer(cfg.optim, m), 10, dev, (MEAN, STD))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (cfg.optim.batch_size, 3, 16, 16), dtype=torch.uint8, generator=g)
    if cfg.data.augment == "device":
        batch = images.to(dev)
    else:  # a crop list as the loader ships it (float, normalised), already on the device
        from ssl_bench.data.device_aug import DeviceMultiCrop
        from ssl_bench.engine.train import crop_policy

        batch = [c.to(dev) for c in DeviceMultiCrop(crop_policy(cfg.data), MEAN, STD)(images, 0)]
    cuda = dev.type == "cuda"
    out = None
    for i in range(steps):
        if cuda and i >= checked_from:
            torch.cuda.synchronize(dev)
            torch.cuda.set_sync_debug_mode("error")
        try:
            out, *_ = step(batch, i, 0)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    return out["loss"].detach()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)")
@pytest.mark.parametrize("augment", ["device", "loader"])
@pytest.mark.parametrize("name", list(METHODS))
def test_engine_step_never_waits_for_the_gpu(name, augment):
    # two warm-up steps first: the first calls initialise cuBLAS, the allocator and lazy state, which may sync
    loss = run_steps(TINY + METHODS[name] + [f"data.augment={augment}"], torch.device("cuda"), steps=4, checked_from=2)
    assert torch.isfinite(loss).item()


def test_the_sync_check_runs_the_step_it_checks():
    """The helper above on the CPU: each method's step runs on both batch forms and gives a finite loss
    (so the CUDA test fails on a sync, not on a broken setup)."""
    for name in ("dino", "swav"):
        for augment in ("device", "loader"):
            loss = run_steps(TINY + METHODS[name] + [f"data.augment={augment}"], torch.device("cpu"), 2, 1)
            assert torch.isfinite(loss), (name, augment)
