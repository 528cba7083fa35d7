"""Pivot the tidy results frame into comparison tables (mean ± std over seeds)."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ssl_bench.results import load_runs

log = logging.getLogger(__name__)


def summary_table(df: pd.DataFrame, evals: list[str] | None = None) -> pd.DataFrame:
    """Rows method x backbone x dataset x epochs, columns eval/metric, cells 'mean ± std (n)'."""
    if df.empty:
        return pd.DataFrame()
    d = df if evals is None else df[df["eval"].isin(evals)]
    d = d.assign(col=d["eval"] + "/" + d["metric"])
    keys = ["method", "backbone", "dataset", "epochs"]
    agg = d.groupby(keys + ["col"])["value"].agg(["mean", "std", "count"]).reset_index()

    def cell(r) -> str:
        std = 0.0 if pd.isna(r["std"]) else r["std"]
        return f"{r['mean']:.4f} ± {std:.4f} (n={int(r['count'])})"

    agg["cell"] = agg.apply(cell, axis=1)
    return agg.pivot(index=keys, columns="col", values="cell").reset_index()


def report_command(overrides: list[str]) -> int:
    opts = dict(o.split("=", 1) for o in overrides if "=" in o)
    root = opts.pop("results_root", "results/runs")
    df = load_runs(root)
    for key, value in opts.items():
        if key not in df.columns:
            from ssl_bench.errors import UserError

            raise UserError(f"unknown report filter {key!r}; valid: {', '.join(df.columns)}")
        df = df[df[key].astype(str) == value]
    if df.empty:
        print(f"no finished runs under {root}")
        return 0
    table = summary_table(df, evals=["knn", "knn@init", "train"])
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False
