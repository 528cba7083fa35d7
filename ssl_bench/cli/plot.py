"""``plot``: figures (bars, k-NN and loss curves, attention maps) from the results folder."""

from __future__ import annotations

from pathlib import Path

from ssl_bench.errors import UserError
from ssl_bench.report import plots
from ssl_bench.report.figures import KINDS, attention_for_run, filtered_logs
from ssl_bench.report.tables import filtered_runs, parse_filters


def logs_with_final_knn(logs, df):
    """The per-epoch k-NN (``eval.knn_every``) completed by each run's final k-NN at its last epoch."""
    import pandas as pd

    final = df[(df["eval"] == "knn") & (df["metric"] == "top1")]
    last = logs.groupby("run_id")["epoch"].max()
    extra = [
        {**logs[logs["run_id"] == r.run_id].iloc[-1].to_dict(), "knn_top1": r.value}
        for r in final.itertuples()
        if r.run_id in last.index
        and logs[(logs["run_id"] == r.run_id) & (logs["epoch"] == last[r.run_id])]["knn_top1"].isna().all()
    ]
    return pd.concat([logs, pd.DataFrame(extra)], ignore_index=True) if extra else logs


def run_inits(df, ev: str, name: str) -> dict[str, float]:
    """Each run's random-init number of ``ev``/``name`` (its own ``@init`` row), by run id."""
    init = df[(df["eval"] == f"{ev}@init") & (df["metric"] == name)]
    return init.groupby("run_id")["value"].mean().to_dict() if not init.empty else {}


def cmd_plot(args: list[str]) -> int:
    kind = "all"
    if args and "=" not in args[0]:
        kind = args[0]
        args = args[1:]
    if kind not in KINDS:
        raise UserError(f"unknown plot kind {kind!r}; valid: {', '.join(KINDS)}")
    opts, filters = parse_filters(args)
    run = filters.pop("run", None)
    root, out = opts.get("results_root", "results/runs"), opts.get("out", "results/figures")
    written: list[Path] = []
    if kind == "attention":
        if not run:
            raise UserError("plot attention needs run=RUN_DIR")
        written += attention_for_run(run, out, seg_root=filters.pop("eval.seg_root", None))
    else:
        df = filtered_runs(root, filters)
        logs = filtered_logs(root, filters)
        if df.empty and logs.empty:
            raise UserError(f"no finished runs under {root}" + (f" matching {filters}" if filters else ""))
        if kind in ("bar", "all"):
            for ev, metric in [
                ("knn", "top1"),
                ("linear", "top1"),
                ("seg", "jaccard_best_head"),
                ("seg", "patch_probe_miou"),
            ]:
                if ((df["eval"] == ev) & (df["metric"] == metric)).any():
                    written += plots.bar_chart(df, out, ev, metric)
        if kind in ("knn_curve", "all") and "knn_top1" in logs.columns:
            written += plots.curves(
                logs_with_final_knn(logs, df), out, "knn_top1", "knn_curve", baseline=run_inits(df, "knn", "top1")
            )
        elif kind == "knn_curve":
            raise UserError("no per-epoch k-NN in the logs: train with eval.knn_every=N")
        if kind in ("loss", "all") and "loss" in logs.columns:
            written += plots.loss_panels(logs, out)
    for p in written:
        print(p)
    if not written:
        raise UserError(f"nothing to plot for kind {kind!r} under {root}")
    return 0
