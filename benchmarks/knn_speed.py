"""k-NN evaluation speed: 10k queries against a 50k x 192 bank (CIFAR-scale, ViT-tiny features).

    python benchmarks/knn_speed.py [--bank 50000] [--queries 10000] [--dim 192] [--repeats 3]

Writes results/benchmarks/knn_speed.csv (median of the repeats) and prints one line.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from csvout import at_least  # noqa: E402

from ssl_bench.atomic import write_text  # noqa: E402
from ssl_bench.evals.knn import knn_accuracy  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bank", type=at_least(1), default=50_000)
    p.add_argument("--queries", type=at_least(1), default=10_000)
    p.add_argument("--dim", type=at_least(1), default=192)
    p.add_argument("--repeats", type=at_least(1), default=3)
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.randn(a.bank, a.dim, generator=g), torch.randn(a.queries, a.dim, generator=g)
    ytr, yte = torch.randint(0, 10, (a.bank,), generator=g), torch.randint(0, 10, (a.queries,), generator=g)
    knn_accuracy(xtr[:1000], ytr[:1000], xte[:100], yte[:100], [20])  # warm-up
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        knn_accuracy(xtr, ytr, xte, yte, [10, 20, 100, 200])
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out = Path("results/benchmarks/knn_speed.csv")
    write_text(
        out,
        "machine,threads,bank,queries,dim,ks,median_s\n"
        f"{platform.machine()}-{os.cpu_count()}cpu,{torch.get_num_threads()},{a.bank},{a.queries},{a.dim},"
        f"10|20|100|200,{med:.3f}\n",
    )
    print(f"knn {a.queries} queries x {a.bank} bank (dim {a.dim}, k=10/20/100/200): {med:.2f} s median of {a.repeats}")


if __name__ == "__main__":
    main()
