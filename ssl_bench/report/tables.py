"""Comparison tables from the tidy results frame.

One row per *setting*: the method, backbone, dataset, preset and epochs, plus every other resolved config key
that differs between runs of those (so ``optim.lr=1e-3`` and ``2e-3`` are two rows, never one pooled row), or
an explicit ``by=`` list that is checked to pool nothing but seeds. Cells are mean ± std over the runs of a
row (ddof=1; seeds are the only axis they differ in) with n shown; booleans are counted (``collapsed 0/3``).
Written as Markdown (display), CSV (numbers: ``<column> mean``, ``std``, ``n``) and LaTeX (pandas Styler,
escaped, constant keys in the caption, wide tables split so each part fits a page).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pandas as pd

from ssl_bench.atomic import write_text
from ssl_bench.errors import UserError
from ssl_bench.report.metrics import metric
from ssl_bench.results import load_runs, setting_columns

log = logging.getLogger(__name__)

ROW_KEYS = ["method", "backbone", "dataset", "preset", "epochs"]
ID_COLUMNS = ["run_id", *ROW_KEYS, "seed", "eval", "metric"]
BELOW_INIT = "↓init"  # marks a mean below the same row's random-initialisation number
COLLAPSED = "†"  # marks every evaluation number of a row in which a run collapsed (train/collapsed)
DEFAULT_COLUMNS = [
    "knn/top1",
    "knn@init/top1",
    "linear/top1",
    "seg/jaccard_best_head",
    "seg/patch_probe_miou",
    "train/collapsed",
]
REPORT_OPTIONS = ("results_root", "out", "name", "columns", "by", "caption", "summaries")
LATEX_VALUE_COLUMNS = 5  # value columns per LaTeX table part: wider tables do not fit a page
MISSING = "—"


def _differing(df: pd.DataFrame, base: list[str]) -> list[str]:
    """Setting columns whose value differs between runs that share the ``base`` keys."""
    if df.empty:
        return []
    cols = setting_columns(df)
    # one row per run and settings: a run's rows differ where a later evaluation used other settings or data
    per_run = df.drop_duplicates(["run_id", *cols]) if "run_id" in df.columns else df
    grouped = per_run.groupby(base, dropna=False)
    return [c for c in cols if (grouped[c].nunique(dropna=False) > 1).any()]


def row_keys(df: pd.DataFrame, by: list[str] | None = None) -> list[str]:
    """The keys that make one table row: ``by`` (checked to pool only seeds), or the base keys plus every
    setting that differs between runs of the same base keys."""
    if not by:
        return ROW_KEYS + _differing(df, ROW_KEYS)
    unknown = [k for k in by if k not in df.columns]
    if unknown:
        raise UserError(
            f"unknown by= key {unknown[0]!r}; valid: {', '.join(ROW_KEYS)} or a config key of these runs "
            "(e.g. optim.lr)"
        )
    pooled = [
        k
        for k in ROW_KEYS + _differing(df, list(by))
        if k not in by and k in df.columns and (df.groupby(list(by), dropna=False)[k].nunique(dropna=False) > 1).any()
    ]
    if pooled:
        raise UserError(
            f"by={','.join(by)} would pool runs that differ in {', '.join(pooled)}: a std over them is "
            f"not seed variance; add {pooled[0]} to by= or filter on it"
        )
    return list(by)


def row_labels(df: pd.DataFrame, keys: list[str] | None = None) -> pd.Series:
    """Each row's table row as a short label (the method, then every key that takes more than one value
    here, e.g. ``simclr lr=0.001``): the grouping figures use, so a line or bar never pools two settings."""
    keys = keys or row_keys(df)
    d = _key_frame(df, keys)
    shown = [k for k in keys if k != "method" and d[k].nunique(dropna=False) > 1]
    short = lambda k: k.rsplit(".", 1)[-1] if k not in ("data.root", "eval.data_root") else k  # noqa: E731
    return (
        d.apply(
            lambda r: " ".join(
                [str(r["method"])]
                + [str(r[k]) if k in ("backbone", "dataset") else f"{short(k)}={r[k]}" for k in shown]
            ),
            axis=1,
        )
        if len(d)
        else pd.Series([], dtype=object)
    )


def _key_frame(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Keys beyond the base ones as text (a method without that key shows '—'), so rows sort and pivot; a
    base key that some rows lack (the epochs of a released checkpoint) reads "n/a" and the column text."""
    extra = [k for k in keys if k not in ROW_KEYS]
    out = df.assign(**{k: df[k].map(lambda v: MISSING if v is None or v != v else str(v)) for k in extra})
    for k in keys:
        if k in ROW_KEYS and k in out.columns and out[k].isna().any():
            out[k] = out[k].map(lambda v: "n/a" if v is None or v != v else str(v))
    return out


def aggregate(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Long frame: one row per (row keys, eval/metric) with mean, std (ddof=1; empty for one run) and n runs."""
    keys = keys or row_keys(df)
    d = _key_frame(df, keys).assign(column=df["eval"] + "/" + df["metric"])
    g = d.groupby(keys + ["column"], dropna=False)
    agg = g["value"].agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    if "seed" in d.columns:
        repeats = g["seed"].agg(lambda s: s.duplicated().any()).reset_index(drop=True)
        for _, r in agg[repeats.values].drop_duplicates(keys).iterrows():
            log.warning(
                "row %s holds several runs with the same seed: its std is run-to-run noise, not seed variance",
                ", ".join(f"{k}={r[k]}" for k in keys),
            )
    return agg


def _columns(agg: pd.DataFrame, columns: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(agg["column"]))
    if columns is None:
        return [c for c in DEFAULT_COLUMNS if c in present] or present
    unknown = [c for c in columns if c not in present]
    if unknown:
        raise UserError(f"unknown column {unknown[0]!r}; valid for these runs: {', '.join(present)}")
    return list(columns)


def _cell(mean: float, std: float, n: int, kind: str, digits: int) -> str:
    if kind == "bool":
        return f"{round(mean * n)}/{n}"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})" if n > 1 else f"{mean:.{digits}f} (n={n})"


def summarise(
    df: pd.DataFrame, columns: list[str] | None = None, by: list[str] | None = None, digits: int = 4
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(display table of 'mean ± std (n=k)' strings, numeric table with mean/std/n per column, row keys)."""
    if df.empty:
        return pd.DataFrame(), pd.DataFrame(), []
    keys = row_keys(df, by)
    agg = aggregate(df, keys)
    cols = _columns(agg, columns)
    agg = agg[agg["column"].isin(cols)].reset_index(drop=True)
    agg["cell"] = [
        _cell(m, s, n, metric(c).kind, digits) for m, s, n, c in zip(agg["mean"], agg["std"], agg["n"], agg["column"])
    ]
    # a number below the same row at random initialisation is marked: training made it worse
    means = {(tuple(r[k] for k in keys), r["column"]): r["mean"] for _, r in agg.iterrows()}
    for i, r in agg.iterrows():
        ev, _, name = r["column"].partition("/")
        init = means.get((tuple(r[k] for k in keys), f"{ev}@init/{name}"))
        if not ev.endswith("@init") and init is not None and r["mean"] < init:
            agg.at[i, "cell"] = agg.at[i, "cell"] + f" {BELOW_INIT}"
    # a row in which any run collapsed carries a mark on every number, whichever columns are shown
    coll = aggregate(df[(df["eval"] == "train") & (df["metric"] == "collapsed")], keys)
    hit = {tuple(r[k] for k in keys) for _, r in coll.iterrows() if r["mean"] > 0}
    for i, r in agg.iterrows():
        evaluated = not r["column"].startswith("train/") and "@init" not in r["column"]  # what the features score
        if tuple(r[k] for k in keys) in hit and evaluated:
            agg.at[i, "cell"] = agg.at[i, "cell"] + f" {COLLAPSED}"
    wide = agg.pivot_table(index=keys, columns="column", values="cell", aggfunc="first").reset_index()
    wide.columns.name = None
    value_cols = [c for c in cols if c in wide.columns]
    wide[value_cols] = wide[value_cols].fillna(MISSING)  # a row without that eval (not run), not a number
    numeric = agg.pivot_table(index=keys, columns="column", values=["mean", "std", "n"], aggfunc="first")
    numeric.columns = [f"{col} {stat}" for stat, col in numeric.columns]
    # a column of stds that are all empty (every row n = 1) is dropped by pivot_table: put it back empty
    numeric = numeric.reindex(columns=[f"{c} {s}" for c in value_cols for s in ("mean", "std", "n")]).reset_index()
    numeric = numeric.astype({f"{c} n": "Int64" for c in value_cols})
    return wide[keys + value_cols], numeric, keys


def summary_table(
    df: pd.DataFrame, columns: list[str] | None = None, by: list[str] | None = None, digits: int = 4
) -> pd.DataFrame:
    """The display table of :func:`summarise`."""
    return summarise(df, columns, by, digits)[0]


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
            cells.append(f"{value:.4f} ({epochs} ep)" if value is not None else MISSING)
            if value is not None:
                used.add(preset)
        if used:
            table = table.assign(**{f"published {col}": cells})
            sources += [f"published ({p}): {ref[p]['source']}" for p in sorted(used) if ref[p].get("source")]
    return table, list(dict.fromkeys(sources))


def _header(column: str) -> str:
    if column.startswith("published "):
        return "published " + metric(column[len("published ") :]).label
    return metric(column).label if "/" in column else column


LATEX_PACKAGES = "% needs \\usepackage{booktabs, siunitx, adjustbox}\n"
_LATEX_MARKS = ((BELOW_INIT, r"$\downarrow$init"), (COLLAPSED, r"\dag"))
_PUBLISHED = re.compile(r"^(-?\d+(?:\.\d+)?) \((\d+) ep\)$")


def _latex_numbers(table: pd.DataFrame, col: str, numeric: pd.DataFrame | None) -> list | None:
    """(mean, std, n) per row of a value column: from ``numeric`` (``<col> mean / std / n``), else read from
    the cells (a published number, or a plain number); None where the column is not numbers."""
    if numeric is not None and f"{col} mean" in numeric.columns:
        std = numeric[f"{col} std"] if f"{col} std" in numeric.columns else pd.Series([None] * len(numeric))
        n = numeric[f"{col} n"] if f"{col} n" in numeric.columns else pd.Series([None] * len(numeric))
        return list(zip(numeric[f"{col} mean"], std, n))
    out: list[tuple[float | None, None, None]] = []
    if table[col].map(lambda v: isinstance(v, bool)).any():  # a flag (collapsed), not a number
        return None
    for cell in table[col]:
        m = _PUBLISHED.match(str(cell))
        try:
            out.append((float(m.group(1)) if m else float(cell), None, None))
        except (TypeError, ValueError):
            if str(cell) != MISSING:
                return None
            out.append((None, None, None))
    return out


def _siunitx(values: list, kind: str) -> tuple[list[str], str]:
    """The cells (``61.2 \\pm 0.8``; fractions in %, one decimal) and the ``S[table-format=...]`` column."""
    scale, decimals = (100.0, 1) if kind == "fraction" else (1.0, 3)
    means = [abs(v[0] * scale) for v in values if v[0] is not None and v[0] == v[0]]
    if kind != "fraction" and means and max(means) >= 100:
        decimals = 1
    cells, ints, unc, neg = [], 1, 0, False
    for mean, std, _ in values:
        if mean is None or mean != mean:
            cells.append("{---}")
            continue
        text = f"{mean * scale:.{decimals}f}"
        neg |= text.startswith("-")
        ints = max(ints, len(text.lstrip("-").split(".")[0]))
        if std is not None and std == std:
            err = f"{std * scale:.{decimals}f}"
            unc = max(unc, len(err.replace(".", "").lstrip("0")) or 1)
            text += f" \\pm {err}"
        cells.append(text)
    fmt = f"{'-' if neg else ''}{ints}.{decimals}" + (f"({unc})" if unc else "")
    return cells, f"S[table-format={fmt}, separate-uncertainty]"


def to_latex(
    table: pd.DataFrame,
    caption: str = "",
    keys: list[str] | None = None,
    max_value_columns: int = LATEX_VALUE_COLUMNS,
    notes: str = "",
    numeric: pd.DataFrame | None = None,
    kinds: dict[str, str] | None = None,
) -> str:
    """booktabs tables through pandas' Styler, for papers: every number in a ``siunitx`` column (fractions
    in % to one decimal, ``mean \\pm std``, std left out for one run), the number of runs per row in the
    caption (or an ``n`` column when rows differ), row keys that are the same in every row said once in the
    caption, value columns split into parts, each part shrunk to ``\\textwidth`` when wider (adjustbox).
    ``numeric`` is :func:`summarise`'s number table; ``kinds`` names a column's kind where it is not a metric
    (fraction, number, bool)."""
    keys = [k for k in (keys or []) if k in table.columns]
    const = [k for k in keys if k != "method" and len(table) > 1 and table[k].nunique(dropna=False) == 1]
    shown = [k for k in keys if k not in const]
    values = [c for c in table.columns if c not in keys]
    kinds = kinds or {}
    kind_of = lambda c: kinds.get(c) or metric(c[len("published ") :] if c.startswith("published ") else c).kind  # noqa: E731
    body = table.reset_index(drop=True).astype(object)  # number columns become siunitx text
    formats: dict[str, str] = {}
    counts: list[set] = [set() for _ in range(len(body))]
    for col in values:
        kind = kind_of(col)
        nums = None if kind == "bool" else _latex_numbers(table, col, numeric)
        if nums is None:
            continue
        cells, formats[col] = _siunitx(nums, kind)
        for i, (cell, shown_cell) in enumerate(zip(cells, table[col])):
            # text after a number is braced in an S column: a published row's epochs, the marks
            pub = _PUBLISHED.match(str(shown_cell))
            after = f"({pub.group(2)} ep)" if pub else ""
            after += "".join(t for m, t in _LATEX_MARKS if m in str(shown_cell))
            body.at[i, col] = cell + (f" {{\\,{after}}}" if after else "")
        for i, (_, _, n) in enumerate(nums):
            if n is not None and n == n:
                counts[i].add(int(n))
    ns = set().union(*counts) if counts else set()
    n_note = ""
    if len(ns) == 1:
        n_note = f"n = {ns.pop()} runs per row"
    elif ns:
        body.insert(len(shown), "n", ["--".join(map(str, sorted({min(c), max(c)}))) if c else "" for c in counts])
        shown = shown + ["n"]
        n_note = "n: runs per row"
    facts = "; ".join(f"{k} {table[k].iloc[0]}" for k in const)
    # the headers say which columns are in %; the mean / std note only where cells pool runs
    cells_note = "Cells: mean ± std over runs that differ only in seed" if numeric is not None and keys else ""
    caption = ". ".join(p for p in (caption, facts, cells_note, n_note, notes) if p)
    n_parts = max(1, math.ceil(len(values) / max_value_columns))
    width = math.ceil(len(values) / n_parts) if values else 0
    parts = [values[i : i + width] for i in range(0, len(values), width)] if values else [[]]
    tex = lambda s: (  # noqa: E731
        str(s).replace("±", r"$\pm$").replace("↓", r"$\downarrow$").replace("‖", r"$\|$").replace(COLLAPSED, r"\dag")
    )
    header = lambda c: _header(c) + (" (%)" if c in formats and kind_of(c) == "fraction" else "")  # noqa: E731
    out = []
    for i, cols in enumerate(parts):
        part = body[shown + cols].rename(columns=header)
        cap = caption + (f" (part {i + 1} of {len(parts)})" if len(parts) > 1 else "")
        numbers = [header(c) for c in shown + cols if c in formats]
        sty = (
            part.style.hide(axis="index")
            .format(tex, escape="latex", subset=[c for c in part.columns if c not in numbers])
            .format(lambda v: v, subset=numbers)
            .format_index(tex, escape="latex", axis=1)
        )
        latex = sty.to_latex(
            hrules=True,
            position_float="centering",
            column_format="".join(formats.get(c, "l") for c in shown + cols),
            caption=tex(_escape(cap)) if cap else None,
            siunitx=True,
        )
        latex = latex.replace("\\begin{tabular}", "\\begin{adjustbox}{max width=\\textwidth}\n\\begin{tabular}")
        out.append(latex.replace("\\end{tabular}\n", "\\end{tabular}\n\\end{adjustbox}\n"))
    return LATEX_PACKAGES + "\n".join(out)


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _escape(text: str) -> str:
    """LaTeX-escape free text (the caption; Styler escapes the cells and headers itself)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def write_tables(
    table: pd.DataFrame,
    out_dir: str | Path,
    name: str = "summary",
    caption: str = "",
    numeric: pd.DataFrame | None = None,
    keys: list[str] | None = None,
    notes: str = "",
    kinds: dict[str, str] | None = None,
) -> list[Path]:
    """NAME.md (display), NAME.tex (LaTeX) and NAME.csv (``numeric`` when given: numbers a tool can read)."""
    out = Path(out_dir)
    paths = [out / f"{name}.md", out / f"{name}.tex", out / f"{name}.csv"]
    write_text(paths[0], table.to_markdown(index=False) + "\n")
    write_text(paths[1], to_latex(table, caption, keys, notes=notes, numeric=numeric, kinds=kinds))
    # 7 significant digits: what a float32 metric holds, without its binary noise (0.6499999761581421)
    write_text(paths[2], (numeric if numeric is not None else table).to_csv(index=False, float_format="%.7g"))
    return paths


def parse_filters(overrides: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Split ``key=value`` into report options (results_root, out, name, columns, by) and row filters."""
    opts: dict[str, str] = {}
    filters: dict[str, str] = {}
    for o in overrides:
        if "=" not in o:
            raise UserError(f"bad argument {o!r}: expected key=value (e.g. method=dino seed=0)")
        k, v = o.split("=", 1)
        (opts if k in REPORT_OPTIONS else filters)[k] = v
    return opts, filters


def _matches(value, allowed: list[str]) -> bool:
    """A cell equals one of the typed values: as text, as a boolean (true/True) or as a number (1e-3 = 0.001)."""
    for a in allowed:
        if str(value) == a or (isinstance(value, bool) and str(value).lower() == a.lower()):
            return True
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                if float(a) == float(value):
                    return True
            except ValueError:
                pass
    return False


def apply_filters(df: pd.DataFrame, filters: dict[str, str], what: str = "report") -> pd.DataFrame:
    """Keep the rows whose ``key`` matches one of the comma-separated values, for any column or config key."""
    for key, value in filters.items():
        if key not in df.columns:
            raise UserError(
                f"unknown {what} filter {key!r}; valid: {', '.join(ID_COLUMNS)} or a config key of these "
                "runs (e.g. optim.lr, data.train_per_class)"
            )
        allowed = value.split(",")
        df = df[df[key].map(lambda v: _matches(v, allowed))]
    return df


def filtered_runs(root: str, filters: dict[str, str]) -> pd.DataFrame:
    df = load_runs(root)
    attrs = dict(df.attrs)
    if df.empty:
        return df
    df = apply_filters(df, filters)
    df.attrs.update(attrs)
    return df


def report_tables(root, overrides: list[str], out=None):
    """The table of the runs under ``root`` that ``overrides`` (report options and filters) select, written
    as md/tex/csv under ``out`` (default: the ``out=`` option): (table, row keys, paths, sources, frame)."""
    opts, filters = parse_filters(overrides)
    df = filtered_runs(str(root), filters)
    if df.empty:
        return None, [], [], [], df
    cols = opts["columns"].split(",") if "columns" in opts else None
    by = opts["by"].split(",") if opts.get("by") else None
    table, numeric, keys = summarise(df, cols, by)
    table, sources = add_published(table, [c for c in table.columns if c not in keys])
    out = out or opts.get("out", "results/tables")
    name = opts.get("name", "summary")
    paths = write_tables(table, out, name, opts.get("caption", ""), numeric, keys, notes="; ".join(sources))
    return table, keys, paths, sources, df


def ablation_tables(
    results: list, out_dir: str | Path, name: str, caption: str, diagnostics: dict[str, str]
) -> tuple[pd.DataFrame, list[Path], list[dict]]:
    """The ablation table NAME.{md,tex,csv} of ``results`` ((variant label, RunDir) pairs): k-NN top-1, random
    init, the diagnostics (train-log key -> column) at the last epoch, the collapse flag; with the per-epoch
    logs for its figure."""
    rows, logs = [], []
    for label, run in results:
        m = {(r["eval"], r["metric"]): r["value"] for r in run.read_metrics()}
        train_log = run.read_train_log()
        final = train_log[-1]
        rows.append(
            {
                "variant": label,
                "knn top-1": m.get(("knn", "top1"), float("nan")),
                "random init": m.get(("knn@init", "top1"), float("nan")),
                **{column: final.get(key, float("nan")) for key, column in diagnostics.items()},
                "collapsed": bool(m.get(("train", "collapsed"), 0.0)),
            }
        )
        logs += [{**r, "variant": label} for r in train_log]
    table = pd.DataFrame(rows)
    table_fmt = table.assign(
        **{c: table[c].map(lambda v: f"{v:.4f}") for c in ("knn top-1", "random init", *diagnostics.values())}
    )
    kinds = {"knn top-1": "fraction", "random init": "fraction"}
    paths = write_tables(table_fmt, out_dir, name, caption, keys=["variant"], kinds=kinds)
    return table_fmt, paths, logs
