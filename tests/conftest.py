"""Shared fixtures: tiny configs, tiny image folders, and the location of the real data."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench import plugins

plugins.load_all()  # as the CLI and the engine do: tests build configs before importing the engine

SHARED_DATA = Path(
    os.environ.get("SSL_BENCH_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
).resolve()
CIFAR10 = SHARED_DATA / "cifar10"
HORSE = SHARED_DATA / "weizmann_horse"

requires_cifar = pytest.mark.skipif(not (CIFAR10 / "train").is_dir(), reason=f"real CIFAR-10 not found at {CIFAR10}")
requires_horse = pytest.mark.skipif(not (HORSE / "images").is_dir(), reason=f"Weizmann Horse not found at {HORSE}")

# Small, fast settings every unit test can build on: a 1-block ViT-tiny/4 on 16 px crops.
TINY = [
    "backbone=vit_tiny",
    "backbone.img_size=16",
    "backbone.depth=1",
    "backbone.patch_size=4",
    "data.local_size=8",
    "data.num_workers=0",
    "optim.batch_size=16",
    "progress=false",
]


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield


# A small DINO (heads, crops, subset) for tests of the engine that train it.
DINO_TINY = [
    "method=dino",
    "method.out_dim=64",
    "method.hidden_dim=32",
    "method.bottleneck_dim=16",
    "data.n_local=2",
    "data.train_per_class=8",
    "data.test_per_class=4",
    "eval.knn_k=[5]",
]


@contextlib.contextmanager
def killed_after_checkpoint(monkeypatch, when):
    """A run trained inside the block is killed (KeyboardInterrupt, as by a preemption) right after the
    first checkpoint for which ``when(epoch, step)`` holds; the block expects that kill."""
    import ssl_bench.engine.train as T

    real_save = T.save_checkpoint

    def save_then_die(path, method, opt, epoch, step, extra=None):
        real_save(path, method, opt, epoch, step, extra)
        if when(epoch, step):
            raise KeyboardInterrupt(f"simulated kill after the checkpoint of epoch {epoch}, step {step}")

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(T, "save_checkpoint", real_save)


@pytest.fixture
def tiny(tmp_path):
    """Overrides for a tiny run writing under tmp_path."""
    return TINY + [f"results_root={tmp_path / 'runs'}"]


def make_image_folder(root: Path, n_per_class: int = 8, classes: int = 2, size: int = 16, seed: int = 0) -> Path:
    """A tiny ImageFolder tree with train/ and test/: class c is a bright square in quadrant c."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
                y, x = divmod(c, 2)
                h = size // 2
                img[y * h : (y + 1) * h, x * h : (x + 1) * h] += 180
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return make_image_folder(tmp_path / "folder")


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local one-node SLURM cluster: the test command brings it up (installing slurm-wlm and munge
    with apt-get when missing, as root) and stops it afterwards. Yields SLURM_CONF or skips."""
    import shutil
    import subprocess

    if os.environ.get("SLURM_CONF") and shutil.which("sbatch"):
        yield os.environ["SLURM_CONF"]  # a cluster the user started
        return
    env = {
        **os.environ,
        "SSL_BENCH_SLURM_DIR": "/tmp/ssl-bench-slurm-test",
        "SSL_BENCH_SLURMCTLD_PORT": "16817",
        "SSL_BENCH_SLURMD_PORT": "16818",
    }
    script = REPO / "slurm" / "local_cluster.sh"
    try:
        out = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, env=env, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"could not start the local SLURM cluster: {err}")
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("export SLURM_CONF=")), None)
    if out.returncode != 0 or line is None:
        pytest.skip(f"could not start the local SLURM cluster: {(out.stderr or out.stdout).strip()[-300:]}")
    conf = line.split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    try:
        yield conf
    finally:
        os.environ.pop("SLURM_CONF", None)
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=120)
