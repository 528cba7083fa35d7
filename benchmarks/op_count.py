"""What a GPU pays for, counted on the CPU: tensor operations launched per training step by the crops and by
the step, the host synchronisations among them and the copies, with torch.profiler
(:mod:`ssl_bench.engine.opcount`). The crops are counted twice, side by side: as the suite draws them (a few
batched tensor ops, ``ssl_bench/data/device_aug.py``) and through the kornia pipeline it ran before
(``benchmarks/kornia_crops.py``); with a LARS recipe the optimizer step is counted alone, as the suite runs it
(multi-tensor ops) and through lightly's LARS.

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
from kornia_crops import KorniaMultiCrop  # noqa: E402

from ssl_bench.engine.opcount import count_ops  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "op_count.csv"
SETTING = [
    "preset=cifar10",
    "backbone=resnet18",
    "data.augment=device",
    "optim.batch_size=32",
    "data.num_workers=0",
    "progress=false",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--steps", type=at_least(1), default=3)
    a = ap.parse_args()
    from ssl_bench.config import build_config
    from ssl_bench.data.multicrop import crop_policy
    from ssl_bench.engine.step import device_augmenter

    method = next((o.split("=", 1)[1] for o in a.overrides if o.startswith("method=")), "dino")
    over = SETTING + [f"method={method}"] + [o for o in a.overrides if not o.startswith("method=")]
    cfg = build_config(over)
    suite = Suite(cfg, load_images(max(cfg.optim.batch_size * 2, 64)))
    cfg, dev = suite.cfg, suite.trainer.device
    aug = device_augmenter(cfg, (MEAN, STD), dev)
    kornia = KorniaMultiCrop(crop_policy(cfg.data), MEAN, STD).to(dev)
    images = torch.randint(
        0, 256, (cfg.optim.batch_size, 3, cfg.data.global_size, cfg.data.global_size), dtype=torch.uint8, device=dev
    )
    views = aug(images, 0)
    state = {"step": 0}

    def crops() -> None:
        aug(images, state["step"])

    def crops_kornia() -> None:
        kornia(images, state["step"])

    def optimizer() -> None:
        suite.opt.step()

    def step() -> None:
        suite.step_fn([v.clone() for v in views], state["step"], 0)
        state["step"] += 1

    def loop() -> None:  # the loop reads the loss once per call, as the engine once per epoch: a.steps per call
        suite.run(a.steps)

    rows = []
    parts = [("crops", crops), ("crops, kornia pipeline", crops_kornia), ("step", step), ("full loop", loop)]
    parts.insert(3, ("optimizer step", optimizer))
    if cfg.optim.optimizer == "lars":  # the same step through lightly's LARS, which the suite's replaced
        from lightly.utils.lars import LARS as LightlyLARS

        held: list = []

        def lightly_lars() -> None:  # built on the first (uncounted) call: the groups as the step left them
            if not held:
                held.append(LightlyLARS([dict(g) for g in suite.opt.param_groups], lr=0.0))
            held[0].step()

        parts.insert(4, ("optimizer step, lightly LARS", lightly_lars))
    for part, fn in parts:
        c = count_ops(fn, 1) if fn is loop else count_ops(fn, a.steps)
        c = {k: v / a.steps for k, v in c.items()} if fn is loop else c
        rows.append(
            {
                "method": method,
                "overrides": " ".join(o for o in a.overrides if not o.startswith("method=")),
                "backbone": cfg.backbone.name,
                "batch": cfg.optim.batch_size,
                "crops": f"{cfg.data.n_global}x{cfg.data.global_size}+{cfg.data.n_local}x{cfg.data.local_size}",
                "part": part,
                **c,
            }
        )
        print(
            f"{method} {part:<28} per step: {c['leaf_ops']:.0f} leaf ops, {c['kernels']:.0f} kernels, "
            f"{c['syncs']:.0f} syncs, {c['copies']:.0f} copies",
            flush=True,
        )
    write_csv(OUT, rows, replace_by=("method", "overrides", "part"))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
