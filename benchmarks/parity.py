"""Every method's ``paper`` training step beside its authors' own code (tests/parity), one line per method,
written to ``results/parity.csv`` and the table in ``results/parity.md``.

    SSL_BENCH_REFERENCES=/path/to/refs python benchmarks/parity.py [--methods dino,moco,moco_v3]

The reference checkouts are read from ``$SSL_BENCH_REFERENCES`` (docs/parity.md says how to make it); a
method whose checkout is missing is a one-line error. Exits 1 when any method is outside its tolerance.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT  # noqa: E402
from csvout import write_csv  # noqa: E402

from ssl_bench.atomic import write_text  # noqa: E402
from tests.parity import harness as H  # noqa: E402

# method -> (reference folder, [(label, callable returning a Comparison)])
RUNS = {
    "dino": ("dino", [("dino", lambda: _mod("test_dino").run())]),
    "moco": ("moco", [("moco", lambda: _mod("test_moco").run())]),
    "swav": ("swav", [("swav", lambda: _mod("test_swav").run())]),
    "simclr": ("solo-learn", [("simclr (cifar10)", lambda: _mod("test_simclr").run())]),
    "byol": ("solo-learn", [("byol (cifar10)", lambda: _mod("test_byol").run())]),
    "moco_v2_plus": ("solo-learn", [("moco v2+ (cifar10)", lambda: _mod("test_moco_solo").run())]),
    "moco_v3": (
        "moco-v3",
        [
            ("moco_v3 (vit)", lambda: _mod("test_moco_v3").run("vit")),
            ("moco_v3 (resnet)", lambda: _mod("test_moco_v3").run("resnet")),
        ],
    ),
}


def _mod(name: str):
    return importlib.import_module(f"tests.parity.{name}")


def _commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(RUNS))
    a = ap.parse_args()
    methods = a.methods.split(",")
    bad = [m for m in methods if m not in RUNS]
    if bad:
        print(f"error: --methods {','.join(bad)} has no parity run; valid: {', '.join(RUNS)}", file=sys.stderr)
        return 2
    for m in methods:
        reason = H.skip_reason(RUNS[m][0])
        if reason:
            print(f"error: {m}: {reason}", file=sys.stderr)
            return 2
    rows, ok = [], True
    for m in methods:
        folder, runs = RUNS[m]
        for label, fn in runs:
            c = fn()
            print(c.line(), flush=True)
            ok &= not c.first_difference
            rows.append(
                {
                    "method": label,
                    "reference": f"{folder}@{H.PINNED[folder]}",
                    "steps": c.steps,
                    "max_loss_rel_diff": c.max_loss_rel,
                    "max_param_diff": c.max_param,
                    "max_bounded_apart_diff": c.max_apart,
                    "max_schedule_diff": c.max_value,
                    "within_tolerance": not c.first_difference,
                    "first_difference": c.first_difference or "none",
                }
            )
    commit = _commit()
    write_csv(ROOT / "results" / "parity.csv", [{**r, "commit": commit} for r in rows], replace_by=("method",))
    _write_md(commit)
    return 0 if ok else 1


def _write_md(commit: str) -> None:
    with (ROOT / "results" / "parity.csv").open() as f:
        rows = list(csv.DictReader(f))
    lines = [
        "# Parity: each `paper` recipe's step beside its authors' code",
        "",
        "| method | reference | steps | loss (rel.) | tensors | bounded apart | schedules | within tolerance |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['reference']} | {r['steps']} | {float(r['max_loss_rel_diff']):.1e} | "
            f"{float(r['max_param_diff']):.1e} | {float(r['max_bounded_apart_diff']):.1e} | "
            f"{float(r['max_schedule_diff']):.1e} | {'yes' if r['within_tolerance'] == 'True' else 'NO'} |"
        )
    commits = sorted({r["commit"] for r in rows})
    lines += [
        "",
        f"Commit {', '.join(commits)}; `SSL_BENCH_REFERENCES=... python benchmarks/parity.py` on 2 CPU cores, fp32.",
        "Largest differences over all steps, the suite against the reference run from the same initial weights on",
        "the same views: the loss (relative), every parameter and buffer (absolute; relative to the largest entry",
        "above 1), the tensors each test bounds apart with its reason (no gradient in either code, or",
        "rounding-sensitive), and LR / weight decay / momentum / temperature. SimCLR, BYOL and MoCo V2+: their",
        "`cifar10` recipes beside solo-learn's Lightning modules (the PyTorch code those recipes cite; SimCLR's",
        "and BYOL's official code is TensorFlow / JAX); BYOL and MoCo V2+ in fp64 (in fp32 that run amplifies",
        "rounding ~1e4x). Harness and tolerances:",
        "`tests/parity/`; how to fetch the references: [docs/parity.md](../docs/parity.md).",
        "",
    ]
    write_text(ROOT / "results" / "parity.md", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
