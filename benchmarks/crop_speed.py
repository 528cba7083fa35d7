"""The on-device crops (``data.augment=device``) as the suite draws them, a few batched tensor ops
(``ssl_bench/data/device_aug.py``), against the kornia pipeline it ran before (``kornia_crops.py``), side by
side: A/B rounds in one process on the same uint8 batch, on the GPU when there is one.

    python benchmarks/crop_speed.py [--settings cifar,cifar-multicrop,imagenet] [--rounds 5] [--seconds 2]

Settings: ``cifar`` 2x32 px crops of 32 px images, batch 512 (the issue's CIFAR/ResNet-18 setting);
``cifar-multicrop`` 2x32 + 6x16 px, batch 128; ``imagenet`` 2x224 + 10x96 px of 224 px images, batch 128 on a
GPU (16 here). DINO's policy (blur and solarisation). Reported: images/s of each side (median of rounds),
the median of per-round ratios and the kernels each launches per call (:mod:`ssl_bench.engine.opcount`).
Writes ``results/benchmarks/crop_speed.csv`` (rows of other devices are kept) and ends with one line per
setting: ``SETTING batched/kornia = R.RRx``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import MEAN, ROOT, STD, sync  # noqa: E402
from csvout import at_least, write_csv  # noqa: E402
from kornia_crops import KorniaMultiCrop  # noqa: E402

from ssl_bench.data.device_aug import DeviceMultiCrop  # noqa: E402
from ssl_bench.data.multicrop import CropPolicy, ViewSpec  # noqa: E402
from ssl_bench.engine.opcount import count_ops  # noqa: E402

# name: (n_global, n_local, global px, local px, batch on a GPU, batch on the CPU)
SETTINGS = {
    "cifar": (2, 0, 32, 16, 512, 512),
    "cifar-multicrop": (2, 6, 32, 16, 128, 128),
    "imagenet": (2, 10, 224, 96, 128, 16),
}


def rate(fn, batch: int, seconds: float) -> float:
    sync()
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        fn(n)
        n += 1
    sync()
    return n * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--rounds", type=at_least(1), default=5)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    bad = [s for s in a.settings.split(",") if s not in SETTINGS]
    if bad:
        raise SystemExit(f"unknown setting {bad[0]!r}; valid: {', '.join(SETTINGS)}")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    rows = []
    for name in a.settings.split(","):
        n_g, n_l, gs, ls, b_gpu, b_cpu = SETTINGS[name]
        batch = b_gpu if dev.type == "cuda" else b_cpu
        policy = CropPolicy(ViewSpec(n_g, n_l), gs, ls, (0.25, 1.0), (0.05, 0.25))
        sides = {
            "batched": DeviceMultiCrop(policy, MEAN, STD).to(dev),
            "kornia": KorniaMultiCrop(policy, MEAN, STD).to(dev),
        }
        x = torch.randint(0, 256, (batch, 3, gs, gs), dtype=torch.uint8, device=dev)
        for aug in sides.values():
            aug(x, 0)  # warm-up: lazy initialisation, kernels, allocator
        speed: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(a.rounds):
            for k, aug in sides.items():
                speed[k].append(rate(lambda i, aug=aug: aug(x, i), batch, a.seconds))
        ratios = [b / k for b, k in zip(speed["batched"], speed["kornia"])]
        ops = {k: count_ops(lambda aug=aug: aug(x, 0)) for k, aug in sides.items()}
        rows.append(
            {
                "setting": name,
                "crops": f"{n_g}x{gs}+{n_l}x{ls}",
                "batch": batch,
                "machine": machine,
                "batched_img_s": statistics.median(speed["batched"]),
                "kornia_img_s": statistics.median(speed["kornia"]),
                "ratio": statistics.median(ratios),
                "batched_kernels": ops["batched"]["kernels"],
                "kornia_kernels": ops["kornia"]["kernels"],
                "batched_syncs": ops["batched"]["syncs"],
                "kornia_syncs": ops["kornia"]["syncs"],
                "rounds": a.rounds,
            }
        )
        print(f"{name} batched/kornia = {statistics.median(ratios):.2f}x", flush=True)
    out = ROOT / "results" / "benchmarks" / "crop_speed.csv"
    write_csv(out, rows, replace_by=("setting", "machine"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
