"""``report``: the table of all runs (md/tex/csv) from the results folder."""

from __future__ import annotations

import sys

from ssl_bench.report.tables import (
    BELOW_INIT,
    COLLAPSED,
    ROW_KEYS,
    add_published,
    filtered_runs,
    parse_filters,
    summarise,
    write_tables,
)


def cmd_report(overrides: list[str]) -> int:
    opts, filters = parse_filters(overrides)
    root = opts.get("results_root", "results/runs")
    df = filtered_runs(root, filters)
    skipped = df.attrs.get("skipped", [])
    if skipped:
        print(
            f"warning: skipped {len(skipped)} run folder(s) whose files cannot be read: {', '.join(skipped)}",
            file=sys.stderr,
        )
    if df.empty:
        print(f"no finished runs under {root}" + (f" matching {filters}" if filters else ""))
        return 0
    cols = opts["columns"].split(",") if "columns" in opts else None
    by = opts["by"].split(",") if opts.get("by") else None
    table, numeric, keys = summarise(df, cols, by)
    table, sources = add_published(table, [c for c in table.columns if c not in keys])
    out, name = opts.get("out", "results/tables"), opts.get("name", "summary")
    paths = write_tables(table, out, name, opts.get("caption", ""), numeric, keys, notes="; ".join(sources))
    print(table.to_markdown(index=False))
    print("cells: mean ± std over the n runs of a row, which differ only in seed")
    if extra := [k for k in keys if k not in ROW_KEYS]:
        print(f"rows also differ in: {', '.join(extra)}")
    if table.astype(str).apply(lambda c: c.str.contains(BELOW_INIT)).any().any():
        print(f"{BELOW_INIT}: below the same row at random initialisation (training made it worse)")
    if table.astype(str).apply(lambda c: c.str.contains(COLLAPSED)).any().any():
        print(f"{COLLAPSED}: a run of this row collapsed (train/collapsed; see its train.jsonl)")
    for line in sources:
        print(line)
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
