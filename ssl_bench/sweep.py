"""Grid expansion (Hydra multirun grammar: ``key=a,b,c``) and the DINO centering/sharpening ablation."""
from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

from ssl_bench.atomic import write_json

log = logging.getLogger(__name__)


def _split_top_level(value: str) -> list[str]:
    """Split on commas outside brackets/quotes, so ``[0.25,1.0]`` stays one value."""
    parts, depth, cur, quote = [], 0, "", None
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """Cartesian product of every ``key=a,b`` override; other overrides are shared."""
    axes = []
    for item in overrides:
        key, sep, value = item.partition("=")
        values = _split_top_level(value) if sep and key != "evals" else [value]
        axes.append([f"{key}={v}" for v in values] if sep else [item])
    return [list(combo) for combo in itertools.product(*axes)]


def ablation_variants(student_temp: float, teacher_temp: float) -> dict[str, list[str]]:
    """DINO's 2x2: centering on/off x sharpening on (teacher temp below student temp) / off (equal)."""
    sharp = [f"method.teacher_temp={teacher_temp}"]
    flat = [f"method.teacher_temp={student_temp}", f"method.warmup_teacher_temp={student_temp}"]
    return {
        "center+sharpen": ["method.centering=true", *sharp],
        "center only": ["method.centering=true", *flat],
        "sharpen only": ["method.centering=false", *sharp],
        "neither": ["method.centering=false", *flat],
    }


def ablate_command(args: list[str]) -> int:
    """``ablate dino [overrides, with optional extra grids]``: run every variant, then write the
    Fig. 7 analogue (teacher entropy and KL per epoch) and a table of k-NN top-1 + collapse flag."""
    import pandas as pd

    from ssl_bench.config import build_config
    from ssl_bench.engine.train import train
    from ssl_bench.errors import UserError
    from ssl_bench.report.plots import ablation_figure
    from ssl_bench.report.tables import write_tables
    from ssl_bench.results import RunDir, new_run_id

    if not args or args[0] != "dino":
        raise UserError("usage: python -m ssl_bench ablate dino [key=value ...]; only DINO has the centering/sharpening ablation")
    overrides = [a for a in args[1:] if not a.startswith("out=")]
    outs = [a.split("=", 1)[1] for a in args[1:] if a.startswith("out=")]
    grids = expand_grid(overrides)
    base = build_config(["method=dino", *grids[0]])  # validate once before running anything
    variants = ablation_variants(base.method.student_temp, base.method.teacher_temp)
    sweep_id = new_run_id("ablate", "dino", base.dataset, base.seed)
    out_root = Path(base.results_root).parent
    fig_dir, tab_dir = (Path(outs[0]) if outs else out_root / "figures"), (Path(outs[0]) if outs else out_root / "tables")
    members = []
    for g in grids:
        extra = [o for o in g if o.split("=", 1)[0] in {k.split("=", 1)[0] for k in overrides if "," in k}]
        for name, var in variants.items():
            label = name + (" | " + " ".join(extra) if extra else "")
            cfg = build_config(["method=dino", *g, *var])
            members.append((label, cfg))
    manifest = {"sweep_id": sweep_id, "members": []}
    manifest_path = Path(base.results_root).parent / "sweeps" / f"{sweep_id}.json"
    from dataclasses import replace

    cfgs = [replace(cfg, run_dir=str(Path(cfg.results_root) / f"{sweep_id}-{i:02d}")) for i, (_, cfg) in enumerate(members)]
    if base.launcher == "slurm":  # the sweep path: one job array, then collect when every member is done
        from ssl_bench.slurm.submit import submit_array, wait_for

        jobs = submit_array(cfgs, manifest_path.parent / sweep_id)
        manifest["members"] = [{"variant": label, "run_dir": str(run.path), "job_id": str(job.job_id)}
                               for (label, _), (job, run) in zip(members, jobs)]
        write_json(manifest_path, manifest)
        print(f"submitted {len(jobs)} ablation runs as one job array; manifest {manifest_path}")
        failed = [run.path for job, run in jobs if wait_for(job, run) != 0]
        if failed:
            raise UserError(f"{len(failed)} ablation runs failed, e.g. {failed[0]}; see python -m ssl_bench status {manifest_path}")
        results = [(label, RunDir(run.path)) for (label, _), (_, run) in zip(members, jobs)]
    else:
        results = []
        for i, ((label, _), cfg) in enumerate(zip(members, cfgs)):
            log.info("ablation %d/%d: %s", i + 1, len(members), label)
            manifest["members"].append({"variant": label, "run_dir": cfg.run_dir, "job_id": None})
            write_json(manifest_path, manifest)
            results.append((label, train(cfg).run_dir))
    rows, logs = [], []
    for label, run in results:
        m = {(r["eval"], r["metric"]): r["value"] for r in run.read_metrics()}
        train_log = run.read_train_log()
        final = train_log[-1]
        rows.append({"variant": label, "knn top-1": m.get(("knn", "top1"), float("nan")),
                     "random init": m.get(("knn@init", "top1"), float("nan")),
                     "teacher entropy": final["teacher_entropy"], "KL": final["kl"],
                     "collapsed": bool(m.get(("train", "collapsed"), 0.0))})
        logs += [{**r, "variant": label} for r in train_log]
    table = pd.DataFrame(rows)
    table_fmt = table.assign(**{c: table[c].map(lambda v: f"{v:.4f}") for c in
                                ("knn top-1", "random init", "teacher entropy", "KL")})
    caption = f"DINO centering/sharpening ablation, {base.dataset}, {base.optim.epochs} epochs, ln(out_dim)={math.log(base.method.out_dim):.3f}"
    paths = write_tables(table_fmt, tab_dir, "ablation_dino", caption)
    paths += ablation_figure(pd.DataFrame(logs), fig_dir, base.method.out_dim)
    print(table_fmt.to_markdown(index=False))
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
