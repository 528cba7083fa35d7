"""``report``: the table of all runs (md/tex/csv) from the results folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ssl_bench.report.archive import keep_summaries
from ssl_bench.report.tables import BELOW_INIT, COLLAPSED, ROW_KEYS, parse_filters, report_tables
from ssl_bench.results import RunDir


def cmd_report(overrides: list[str]) -> int:
    opts, filters = parse_filters(overrides)
    root = opts.get("results_root", "results/runs")
    summaries = opts.get("summaries")
    table, keys, paths, sources, df = report_tables(root, overrides)
    skipped = df.attrs.get("skipped", [])
    if skipped:
        print(
            f"warning: skipped {len(skipped)} run folder(s) whose files cannot be read: {', '.join(skipped)}",
            file=sys.stderr,
        )
    if table is None:
        print(f"no finished runs under {root}" + (f" matching {filters}" if filters else ""))
        return 0
    if summaries:  # the reported runs' small files and these options: the table can be rendered again
        again = [o for o in overrides if o.split("=", 1)[0] not in ("results_root", "out", "summaries")]
        runs = [RunDir(Path(root) / rid) for rid in sorted(df["run_id"].unique())]
        paths.append(keep_summaries(runs, summaries, {"command": "report", "options": again}))
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
