"""``sweep`` and ``ablate``: grids of runs, and a method's ablation grid."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from ssl_bench.atomic import write_json
from ssl_bench.config import build_config
from ssl_bench.engine.launch import launch, plan
from ssl_bench.errors import UserError
from ssl_bench.report.archive import keep_summaries, summaries_target
from ssl_bench.report.plots import ablation_figure
from ssl_bench.report.tables import ablation_tables
from ssl_bench.results import flatten, new_run_id
from ssl_bench.slurm.submit import wait_for
from ssl_bench.sweep import ablation_grid, ablation_variants, expand_grid, yaml_dict

log = logging.getLogger(__name__)


def cmd_sweep(args: list[str]) -> int:
    grid = expand_grid(args)
    cfgs = plan([build_config(g) for g in grid])  # validate every member before submitting any
    first = cfgs[0]
    sweep_id = new_run_id("sweep", first.method.name, first.dataset, first.seed)
    manifest_path = Path(first.results_root).parent / "sweeps" / f"{sweep_id}.json"
    members: list[dict[str, Any]] = []
    manifest = {"sweep_id": sweep_id, "launcher": first.launcher, "created": time.time(), "members": members}
    if first.launcher == "slurm":
        jobs = launch(cfgs, array_folder=manifest_path.parent / sweep_id)
        for g, started in zip(grid, jobs):
            members.append({"overrides": g, "run_dir": str(started.run.path), "job_id": started.job_id})
        write_json(manifest_path, manifest)
        print(f"submitted {len(jobs)} runs as job array {str(jobs[0].job_id).split('_')[0]}")
        print(f"sweep manifest: {manifest_path}\nstatus: python -m ssl_bench status {manifest_path}")
        return 0
    for g, c in zip(grid, cfgs):
        members.append({"overrides": g, "run_dir": c.run_dir, "job_id": None})
    write_json(manifest_path, manifest)  # before training: status can follow the sweep
    failed = 0
    for i, (g, c) in enumerate(zip(grid, cfgs)):
        log.info("sweep member %d/%d: %s", i + 1, len(cfgs), " ".join(g))
        try:
            launch([c])
        except UserError as err:  # a diverging member, a bad data folder: recorded, and the sweep goes on
            failed += 1
            members[i]["error"] = (str(err).strip().splitlines() or [type(err).__name__])[0]
            write_json(manifest_path, manifest)
            log.error("sweep member %d/%d failed: %s", i + 1, len(cfgs), members[i]["error"])
    print(f"sweep manifest: {manifest_path}")
    if failed:
        print(f"{failed} of {len(cfgs)} sweep members failed: python -m ssl_bench status {manifest_path}")
    return min(failed, 100)  # the exit code counts the failed members


def cmd_ablate(args: list[str]) -> int:
    """``ablate METHOD [overrides, with optional extra grids]``: run every variant of the method's grid
    (``configs/ablations/<method>.yaml``), then write the per-epoch figure of its diagnostics and a table of
    k-NN top-1, the diagnostics at the last epoch and the collapse flag."""
    import pandas as pd

    if not args or "=" in args[0]:
        raise UserError("usage: python -m ssl_bench ablate METHOD [key=value ...] (e.g. ablate dino)")
    method = args[0]
    grid = ablation_grid(method)
    overrides = [a for a in args[1:] if not a.startswith(("out=", "summaries="))]
    outs = [a.split("=", 1)[1] for a in args[1:] if a.startswith("out=")]
    summaries = [summaries_target(a.split("=", 1)[1]) for a in args[1:] if a.startswith("summaries=")]
    grids = expand_grid(overrides)
    base = build_config([f"method={method}", *grids[0]])  # validate once before running anything
    variants = ablation_variants(grid, base)
    sweep_id = new_run_id("ablate", method, base.dataset, base.seed)
    out_root = Path(base.results_root).parent
    fig_dir, tab_dir = (
        (Path(outs[0]) if outs else out_root / "figures"),
        (Path(outs[0]) if outs else out_root / "tables"),
    )
    members = []
    for g in grids:
        extra = [o for o in g if o.split("=", 1)[0] in {k.split("=", 1)[0] for k in overrides if "," in k}]
        for name, var in variants.items():
            label = name + (" | " + " ".join(extra) if extra else "")
            cfg = build_config([f"method={method}", *g, *var])
            members.append((label, cfg))
    manifest: dict[str, Any] = {"sweep_id": sweep_id, "members": []}
    manifest_path = Path(base.results_root).parent / "sweeps" / f"{sweep_id}.json"
    from dataclasses import replace

    cfgs = [
        replace(cfg, run_dir=str(Path(cfg.results_root) / f"{sweep_id}-{i:02d}")) for i, (_, cfg) in enumerate(members)
    ]
    labels = [label for label, _ in members]
    if base.launcher == "slurm":  # the sweep path: one job array, then collect when every member is done
        jobs = launch(cfgs, array_folder=manifest_path.parent / sweep_id)
        manifest["members"] = [
            {"variant": label, "run_dir": str(j.run.path), "job_id": j.job_id} for label, j in zip(labels, jobs)
        ]
        write_json(manifest_path, manifest)
        print(f"submitted {len(jobs)} ablation runs as one job array; manifest {manifest_path}")
        failed = [j.run.path for j in jobs if wait_for(j.job, j.run) != 0]
        if failed:
            raise UserError(
                f"{len(failed)} ablation runs failed, e.g. {failed[0]}; see python -m ssl_bench status {manifest_path}"
            )
    else:

        def started(i: int, cfg) -> None:
            log.info("ablation %d/%d: %s", i + 1, len(members), labels[i])
            manifest["members"].append({"variant": labels[i], "run_dir": cfg.run_dir, "job_id": None})
            write_json(manifest_path, manifest)

        jobs = launch(cfgs, on_start=started)
    results = [(label, j.run) for label, j in zip(labels, jobs)]
    ceiling_key: str = grid.get("ceiling_log_of") or ""
    ceiling = float(flatten(yaml_dict(base))[ceiling_key]) if ceiling_key else None
    caption = f"{method} ablation, {base.dataset}, {base.optim.epochs} epochs" + (
        f", ln({ceiling_key.rsplit('.', 1)[-1]})={math.log(ceiling):.3f}" if ceiling else ""
    )
    diagnostics = grid.get("diagnostics") or {}
    table_fmt, paths, logs = ablation_tables(results, tab_dir, f"ablation_{method}", caption, diagnostics)
    paths += ablation_figure(
        pd.DataFrame(logs),
        fig_dir,
        list(diagnostics),
        ceiling,
        f"ln({ceiling_key.rsplit('.', 1)[-1]})" if ceiling_key else "",
        f"ablation_{method}",
        order=list(grid["variants"]),
    )
    if summaries:
        spec = {
            "command": "ablate",
            "method": method,
            "name": f"ablation_{method}",
            "caption": caption,
            "diagnostics": diagnostics,
            "members": [{"variant": label, "run": run.run_id} for label, run in results],
        }
        paths.append(keep_summaries([run for _, run in results], summaries[0], spec))
    print(table_fmt.to_markdown(index=False))
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
