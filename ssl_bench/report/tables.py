"""Comparison tables from the tidy results frame: rows method x backbone, columns eval/metric,
cells mean ± std over seeds with the number of seeds; written as Markdown, LaTeX (booktabs), CSV."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

from ssl_bench.atomic import write_text
from ssl_bench.errors import UserError
from ssl_bench.results import load_runs

log = logging.getLogger(__name__)

ROW_KEYS = ["method", "backbone", "dataset", "preset", "epochs"]
BELOW_INIT = "↓init"  # marks a mean below the same backbone's random-initialisation row
DEFAULT_COLUMNS = ["knn/top1", "knn@init/top1", "linear/top1", "seg/jaccard_best_head", "seg/patch_probe_miou",
                   "train/collapsed"]


def aggregate(df: pd.DataFrame, row_keys: list[str] | None = None) -> pd.DataFrame:
    """Long frame: one row per (row keys, eval/metric) with mean, std (ddof=1; 0 for one seed), n."""
    keys = row_keys or ROW_KEYS
    d = df.assign(column=df["eval"] + "/" + df["metric"])
    agg = d.groupby(keys + ["column"], dropna=False)["value"].agg(["mean", "std", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)
    return agg.rename(columns={"count": "n"})


def summary_table(df: pd.DataFrame, columns: list[str] | None = None, row_keys: list[str] | None = None,
                  digits: int = 4) -> pd.DataFrame:
    """Wide table of 'mean ± std (n)' strings ('value (n=1)' for one seed: a std needs two)."""
    if df.empty:
        return pd.DataFrame()
    keys = row_keys or ROW_KEYS
    agg = aggregate(df, keys)
    present = list(dict.fromkeys(agg["column"]))
    cols = [c for c in (columns or present) if c in present]
    agg = agg[agg["column"].isin(cols)]
    agg["cell"] = [f"{m:.{digits}f} ± {s:.{digits}f} (n={n})" if n > 1 else f"{m:.{digits}f} (n={n})"
                   for m, s, n in zip(agg["mean"], agg["std"], agg["n"])]
    # a number below the same backbone at random initialisation is marked: training made it worse
    means = {(tuple(r[k] for k in keys), r["column"]): r["mean"] for _, r in agg.iterrows()}
    for i, r in agg.iterrows():
        ev, _, metric = r["column"].partition("/")
        init = means.get((tuple(r[k] for k in keys), f"{ev}@init/{metric}"))
        if not ev.endswith("@init") and init is not None and r["mean"] < init:
            agg.at[i, "cell"] = agg.at[i, "cell"] + f" {BELOW_INIT}"
    wide = agg.pivot_table(index=keys, columns="column", values="cell", aggfunc="first").reset_index()
    wide.columns.name = None
    value_cols = [c for c in cols if c in wide.columns]
    wide[value_cols] = wide[value_cols].fillna("—")  # a row without that eval (not run), not a number
    return wide[keys + value_cols]


def published_results() -> dict:
    """``report/published.yaml``: per preset, the benchmark's own numbers for each method."""
    from importlib import resources

    import yaml

    return yaml.safe_load(resources.files("ssl_bench.report").joinpath("published.yaml").read_text()) or {}


def add_published(table: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A 'published <column>' beside each requested column that the benchmark of a row's recipe reports
    (the number and the epochs it trained), and the sources to cite under the table."""
    if table.empty or "preset" not in table.columns:
        return table, []
    ref = published_results()
    sources: list[str] = []
    for col in columns:
        cells, used = [], set()
        for method, preset in zip(table["method"], table["preset"]):
            entry = ref.get(preset) or {}
            value = (entry.get(col) or {}).get(method)
            epochs = entry.get("epochs")
            epochs = epochs.get(method) if isinstance(epochs, dict) else epochs
            cells.append(f"{value:.4f} ({epochs} ep)" if value is not None else "—")
            if value is not None:
                used.add(preset)
        if used:
            table = table.assign(**{f"published {col}": cells})
            sources += [f"published ({p}): {ref[p]['source']}" for p in sorted(used) if ref[p].get("source")]
    return table, list(dict.fromkeys(sources))


def to_latex_booktabs(table: pd.DataFrame, caption: str = "") -> str:
    esc = lambda s: str(s).replace("_", r"\_").replace("±", r"$\pm$").replace("%", r"\%").replace("↓", r"$\downarrow$")
    cols = list(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_tables(table: pd.DataFrame, out_dir: str | Path, name: str = "summary", caption: str = "") -> list[Path]:
    out = Path(out_dir)
    paths = [out / f"{name}.md", out / f"{name}.tex", out / f"{name}.csv"]
    write_text(paths[0], table.to_markdown(index=False) + "\n")
    write_text(paths[1], to_latex_booktabs(table, caption))
    write_text(paths[2], table.to_csv(index=False))
    return paths


def parse_filters(overrides: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``key=value`` into report options (results_root, out, name, columns) and row filters."""
    opts, filters = {}, {}
    for o in overrides:
        if "=" not in o:
            raise UserError(f"bad argument {o!r}: expected key=value (e.g. method=dino seed=0)")
        k, v = o.split("=", 1)
        (opts if k in ("results_root", "out", "name", "columns") else filters)[k] = v
    return opts, filters


def filtered_runs(root: str, filters: dict[str, str]) -> pd.DataFrame:
    df = load_runs(root)
    skipped = df.attrs.get("skipped", [])
    for key, value in filters.items():
        if key not in df.columns:
            raise UserError(f"unknown report filter {key!r}; valid: {', '.join(df.columns)}")
        allowed = value.split(",")
        df = df[df[key].astype(str).isin(allowed)]
    df.attrs["skipped"] = skipped
    return df


def report_command(overrides: list[str]) -> int:
    opts, filters = parse_filters(overrides)
    root = opts.get("results_root", "results/runs")
    df = filtered_runs(root, filters)
    skipped = df.attrs.get("skipped", [])
    if skipped:
        print(f"warning: skipped {len(skipped)} run folder(s) whose files cannot be read: {', '.join(skipped)}",
              file=sys.stderr)
    if df.empty:
        print(f"no finished runs under {root}" + (f" matching {filters}" if filters else ""))
        return 0
    cols = opts["columns"].split(",") if "columns" in opts else DEFAULT_COLUMNS
    table, sources = add_published(summary_table(df, cols), cols)
    paths = write_tables(table, opts.get("out", "results/tables"), opts.get("name", "summary"), "; ".join(sources))
    print(table.to_markdown(index=False))
    if table.astype(str).apply(lambda c: c.str.contains(BELOW_INIT)).any().any():
        print(f"{BELOW_INIT}: below the same backbone at random initialisation (training made it worse)")
    for line in sources:
        print(line)
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
