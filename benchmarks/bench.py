"""What every benchmark script shares: the issue's setting (DEFAULTS, bench_overrides), the images, the
suite's side (the engine's own train step fed by the engine's own loader) and the timing helpers.
The peer (each method written the plain lightly way) is in ``peer.py``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
METHODS = ["dino", "simclr", "byol", "moco", "swav"]
DEFAULTS = ["preset=cifar10-cpu", "backbone.depth=12", "optim.batch_size=128", "data.num_workers=0", "progress=false"]
LOCAL = {"dino": 6, "swav": 6}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def defaults(over: list[str]) -> list[str]:
    """DEFAULTS, less the ViT depth when the overrides pick a ResNet (which has no such key)."""
    resnet = any(o.startswith("backbone=resnet") for o in over)
    return [d for d in DEFAULTS if not (resnet and d.startswith("backbone.depth="))]


def bench_overrides(overrides: list[str], method: str = "dino") -> tuple[str, list[str]]:
    """The one method a benchmark script runs (``method=`` in ``overrides``, else ``method``) and its full
    override list: DEFAULTS, the method, its local crops (LOCAL, unless ``data.n_local=`` is given), the rest."""
    method = next((o.split("=", 1)[1] for o in overrides if o.startswith("method=")), method)
    rest = [o for o in overrides if not o.startswith("method=")]
    if not any(o.startswith("data.n_local=") for o in rest):
        rest.append(f"data.n_local={LOCAL.get(method, 0)}")
    return method, defaults(rest) + [f"method={method}"] + rest


# -- data -----------------------------------------------------------------------------------------
def load_images(n: int) -> list[Image.Image]:
    if (CIFAR / "train").is_dir():
        files = sorted((CIFAR / "train").glob("*/*.png"))
        step = max(len(files) // n, 1)
        return [Image.open(f).convert("RGB") for f in files[::step][:n]]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


class ImageList(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), 0


def endless(make_loader):
    """Batches forever, a fresh loader (new epoch) whenever one runs out."""
    while True:
        yield from make_loader()


# -- the suite ------------------------------------------------------------------------------------
class Suite:
    def __init__(self, cfg, images):
        from ssl_bench.data.datasets import DataSplits, ListDataset
        from ssl_bench.engine.train import Trainer, build_method, make_optimizer, make_train_step

        self.trainer = Trainer(cfg)
        self.cfg = cfg = self.trainer.cfg
        if len(images) < cfg.optim.batch_size:
            raise SystemExit(
                f"--images {len(images)} is fewer than one batch: give at least optim.batch_size={cfg.optim.batch_size}"
            )
        dev = self.trainer.device
        self.splits = DataSplits(ListDataset(images, [0] * len(images)), ListDataset(images[:1], [0]), 10, MEAN, STD)
        self.method = build_method(cfg).to(dev)
        self.method.train()
        self.spe = len(images) // cfg.optim.batch_size
        self.opt = make_optimizer(cfg.optim, self.method)
        self.step_fn = make_train_step(cfg, self.method, self.opt, self.spe, dev, (MEAN, STD))
        # as the engine does: one loader for the whole run, workers started once
        self.batches = iter(self.trainer.training_batches(self.splits, 0, 0, 10**6))
        self.step = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            views, _ = next(self.batches)
            out, *_ = self.step_fn(views, self.step, self.step // self.spe)
            self.step += 1
        if n:
            out["loss"].detach().item()  # one sync at the end, as the engine does per epoch


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(side, steps: int) -> float:
    sync()
    t = time.perf_counter()
    side.run(steps)
    sync()
    return steps * side.cfg.optim.batch_size / (time.perf_counter() - t)
