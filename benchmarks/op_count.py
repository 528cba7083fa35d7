"""What a GPU pays for, counted on the CPU: tensor operations launched per training step by the crops and by
the step, the host synchronisations among them and the copies, with torch.profiler.

    python benchmarks/op_count.py [method=dino] [key=value ...] [--steps 3]

On a GPU each leaf operation is (at least) one kernel launch and each ``item``/``_local_scalar_dense`` a
host-device synchronisation, so these counts are the per-step host work that issue 18's profile points at
(7.35 s wall for 30 steps, GPU busy 15%). They do not depend on the batch size; the defaults are the issue's
CIFAR setting (ResNet-18 with the CIFAR stem, 32 px, 2 global crops, crops drawn on the device), at batch 32
so that the count runs in seconds here. Counts, not times: this runs beside anything.

Writes ``results/benchmarks/op_count.csv`` (one row per method and part; rows of other methods are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import MEAN, STD, Suite, load_images  # noqa: E402
from csvout import at_least, write_csv  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "op_count.csv"
SETTING = [
    "preset=cifar10",
    "backbone=resnet18",
    "data.augment=device",
    "optim.batch_size=32",
    "data.num_workers=0",
    "progress=false",
]
SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")
COPIES = ("aten::copy_", "aten::to", "aten::_to_copy")


def leaf_counts(events) -> dict[str, int]:
    """Leaf ``aten::`` operations (no ``aten::`` op below them: what launches a kernel), syncs and copies."""
    leaves = [
        e
        for e in events
        if e.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in e.cpu_children)
    ]
    return {
        "leaf_ops": len(leaves),
        "syncs": sum(e.name in SYNCS for e in events),
        "copies": sum(e.name in COPIES for e in leaves),
    }


def count(fn, steps: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up: lazy initialisation is not per-step work
    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(steps):
            fn()
    return {k: v / steps for k, v in leaf_counts(p.events()).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--steps", type=at_least(1), default=3)
    a = ap.parse_args()
    from ssl_bench.config import build_config
    from ssl_bench.engine.step import device_augmenter

    method = next((o.split("=", 1)[1] for o in a.overrides if o.startswith("method=")), "dino")
    over = SETTING + [f"method={method}"] + [o for o in a.overrides if not o.startswith("method=")]
    cfg = build_config(over)
    suite = Suite(cfg, load_images(max(cfg.optim.batch_size * 2, 64)))
    cfg, dev = suite.cfg, suite.trainer.device
    aug = device_augmenter(cfg, (MEAN, STD), dev)
    images = torch.randint(
        0, 256, (cfg.optim.batch_size, 3, cfg.data.global_size, cfg.data.global_size), dtype=torch.uint8, device=dev
    )
    views = aug(images, 0)
    state = {"step": 0}

    def crops() -> None:
        aug(images, state["step"])

    def step() -> None:
        suite.step_fn([v.clone() for v in views], state["step"], 0)
        state["step"] += 1

    def loop() -> None:
        suite.run(1)

    rows = []
    for part, fn in (("crops", crops), ("step", step), ("full loop", loop)):
        c = count(fn, a.steps)
        rows.append(
            {
                "method": method,
                "backbone": cfg.backbone.name,
                "batch": cfg.optim.batch_size,
                "crops": f"{cfg.data.n_global}x{cfg.data.global_size}+{cfg.data.n_local}x{cfg.data.local_size}",
                "part": part,
                **c,
            }
        )
        print(
            f"{method} {part:<9} per step: {c['leaf_ops']:.0f} leaf ops, {c['syncs']:.0f} syncs, "
            f"{c['copies']:.0f} copies",
            flush=True,
        )
    write_csv(OUT, rows, replace_by=("method", "part"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
