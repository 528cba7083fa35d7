"""k-NN top-1 on CIFAR-10 after equal wall-clock training budgets: the suite's engine vs the plain
lightly loop (the peer of ``benchmarks/throughput.py``), same backbone, crops, batch, threads, data.

    python benchmarks/time_to_accuracy.py [method=dino] [key=value ...] [--budgets 300,900] [--queries 2000]

Pre-training images: the protocol's 10,000 (first 1,000 sorted files per class of ../shared/data/cifar10
train/); k-NN bank = those images, queries = the first ``--queries / 10`` test images per class, k = 20,
T = 0.07, encoder = the method's evaluation network (DINO: the teacher backbone). Each side trains in
slices of ``--slice`` steps, the two sides alternating (the one with less training time so far goes
next, so drift and other load hit both alike), until its cumulative training time reaches each budget
(evaluation time excluded); then both encoders are evaluated. Writes
``results/benchmarks/time_to_accuracy.csv`` (rows of other methods and configs kept; the overrides in its
``config`` column).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import CIFAR, ROOT, Suite, bench_overrides  # noqa: E402
from csvout import at_least, write_csv  # noqa: E402
from peer import Peer  # noqa: E402


def encoder_of(side) -> torch.nn.Module:
    if isinstance(side, Suite):
        return side.method.encoder()
    if side.name == "dino":
        return side.teacher[0]
    if side.name == "byol":
        return side.backbone_proj[0]
    if side.name == "swav":
        return side.proj[0]
    return side.online[0]


def knn_top1(encoder, bank, queries, size: int, mean, std) -> float:
    """k-NN top-1 (k = 20) of ``encoder`` with in-memory ``bank`` and ``queries`` datasets."""
    from ssl_bench.evals.features import extract_features
    from ssl_bench.evals.knn import knn_accuracy

    args = (size, mean, std, next(encoder.parameters()).device)
    xtr, ytr = extract_features(encoder, bank, *args)
    xte, yte = extract_features(encoder, queries, *args)
    return knn_accuracy(xtr, ytr, xte, yte, [20])[20]["top1"]


def budgets(text: str) -> list[float]:
    """An argparse ``type``: comma-separated training seconds, each > 0, sorted."""
    try:
        out = sorted(float(b) for b in text.split(","))
    except ValueError:
        out = []
    if not out or out[0] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid: give seconds > 0, comma-separated (e.g. 300,900)")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*")
    p.add_argument(
        "--budgets", type=budgets, default="300,900", help="cumulative training seconds at which to evaluate"
    )
    p.add_argument("--queries", type=at_least(10), default=2000)
    p.add_argument("--slice", type=at_least(1), default=5, help="steps between clock checks")
    p.add_argument(
        "--per-class", type=at_least(1), default=1000, help="pre-training / bank images per class (protocol: 1000)"
    )
    a = p.parse_args()
    if not (CIFAR / "train").is_dir():
        raise SystemExit(f"needs CIFAR-10 as an ImageFolder tree at {CIFAR}")
    from ssl_bench.config import build_config
    from ssl_bench.data.datasets import ListDataset, build_datasets, targets_of
    from ssl_bench.engine.train import resolve

    method, full = bench_overrides(a.overrides)
    cfg = resolve(build_config(full))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    # read once: the pre-training images are the k-NN bank; every evaluation reuses both in memory
    splits = build_datasets(
        "cifar10", replace(cfg.data, root=str(CIFAR), train_per_class=a.per_class, test_per_class=a.queries // 10)
    )
    bank, queries = (ListDataset([s[i][0] for i in range(len(s))], targets_of(s)) for s in (splits.train, splits.test))
    images = bank.images
    evaluate = partial(
        knn_top1, bank=bank, queries=queries, size=cfg.data.global_size, mean=splits.mean, std=splits.std
    )
    config = " ".join(a.overrides + [f"--per-class {a.per_class}", f"--queries {a.queries}"])
    rows = []
    # Both sides live in one process and train in alternating slices (whichever has had less training
    # time goes next), so machine drift and other load on the machine hit both alike, as in throughput.py
    sides = {label: cls(cfg, images) for label, cls in (("suite", Suite), ("peer", Peer))}
    spent = {label: 0.0 for label in sides}
    seen = {label: 0 for label in sides}
    init = {}
    for label, side in sides.items():
        init[label] = evaluate(encoder_of(side))
        rows.append(
            {
                "side": label,
                "method": method,
                "budget_s": 0.0,
                "train_s": 0.0,
                "images": 0,
                "knn_top1": init[label],
                "config": config,
            }
        )
    for b in a.budgets:
        while min(spent.values()) < b:
            label = min(spent, key=spent.get)
            t = time.perf_counter()
            sides[label].run(a.slice)
            spent[label] += time.perf_counter() - t
            seen[label] += a.slice * cfg.optim.batch_size
        for label, side in sides.items():
            acc = evaluate(encoder_of(side))
            rows.append(
                {
                    "side": label,
                    "method": method,
                    "budget_s": b,
                    "train_s": spent[label],
                    "images": seen[label],
                    "knn_top1": acc,
                    "config": config,
                }
            )
            print(
                f"{label}: {spent[label]:.0f} s of training, {seen[label]} images, k-NN top-1 {acc:.4f} "
                f"(init {init[label]:.4f})",
                flush=True,
            )
    write_csv(ROOT / "results" / "benchmarks" / "time_to_accuracy.csv", rows, replace_by=("method", "config"))


if __name__ == "__main__":
    main()
