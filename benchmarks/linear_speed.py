"""The linear probe's logistic regression, scikit-learn on the CPU against torch's L-BFGS on the training
device (``eval.linear_solver``), side by side on the same features: the whole C path (held-out fits, refit,
test scores) as the ``linear`` evaluation runs it.

    python benchmarks/linear_speed.py [--n 10000] [--dim 512] [--classes 10] [--sides sklearn,torch]

Features: ``--n`` training and ``--n / 5`` test vectors, class centres plus noise that overlaps them (a probe
that is neither trivial nor chance), float32. On a GPU ``torch`` runs there (issue 18's case: ``--n 50000 --dim
2048``); scikit-learn always on the CPU. Writes ``results/benchmarks/linear_speed.csv`` (rows of other sizes and
machines kept): seconds and test top-1 per side, and the sklearn/torch time ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT  # noqa: E402
from csvout import at_least, write_csv  # noqa: E402

from ssl_bench.evals.linear import fit_linear_probe, fit_linear_probe_torch  # noqa: E402

GRID = [0.01, 0.1, 1.0, 10.0]  # eval.linear_c_grid's default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=at_least(50), default=10_000)
    ap.add_argument("--dim", type=at_least(1), default=512)
    ap.add_argument("--classes", type=at_least(2), default=10)
    ap.add_argument("--sides", default="sklearn,torch")
    a = ap.parse_args()
    sides = a.sides.split(",")
    bad = [s for s in sides if s not in ("sklearn", "torch")]
    if bad:
        raise SystemExit(f"unknown side {bad[0]!r}; valid: sklearn, torch")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(a.classes, a.dim)).astype(np.float32)
    ytr, yte = np.arange(a.n) % a.classes, np.arange(a.n // 5) % a.classes
    noise = np.sqrt(a.dim / 2)  # centres ~2 noise apart: overlapping classes at any dimension
    xtr = centres[ytr] + rng.normal(scale=noise, size=(a.n, a.dim)).astype(np.float32)
    xte = centres[yte] + rng.normal(scale=noise, size=(len(yte), a.dim)).astype(np.float32)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machine = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    row: dict = {"n": a.n, "dim": a.dim, "classes": a.classes, "machine": machine, "torch_device": dev.type}
    for side in sides:
        t = time.perf_counter()
        if side == "sklearn":
            res = fit_linear_probe(xtr, ytr, xte, yte, GRID)
        else:
            args = [torch.from_numpy(v) for v in (xtr, ytr, xte, yte)]
            res = fit_linear_probe_torch(*args, GRID, 0, dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        row[f"{side}_s"] = time.perf_counter() - t
        row[f"{side}_top1"] = res["top1"]
        row[f"{side}_C"] = res["C"]
        print(f"{side}: {row[f'{side}_s']:.1f} s, top-1 {res['top1']:.4f}, C {res['C']:g}", flush=True)
    if len(sides) == 2:
        row["sklearn_over_torch"] = row["sklearn_s"] / row["torch_s"]
        print(f"sklearn/torch time = {row['sklearn_over_torch']:.2f}x")
    out = ROOT / "results" / "benchmarks" / "linear_speed.csv"
    write_csv(out, [row], replace_by=("n", "dim", "classes", "machine"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
