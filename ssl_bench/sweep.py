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
    rows, logs = [], []
    for i, (label, cfg) in enumerate(members):
        log.info("ablation %d/%d: %s", i + 1, len(members), label)
        from dataclasses import replace

        cfg = replace(cfg, run_dir=str(Path(cfg.results_root) / f"{sweep_id}-{i:02d}"))
        result = train(cfg)
        manifest["members"].append({"variant": label, "run_dir": str(result.run_dir.path)})
        write_json(Path(cfg.results_root).parent / "sweeps" / f"{sweep_id}.json", manifest)
        m = {(r["eval"], r["metric"]): r["value"] for r in result.metrics}
        final = result.run_dir.read_train_log()[-1]
        rows.append({"variant": label, "knn top-1": m.get(("knn", "top1"), float("nan")),
                     "random init": m.get(("knn@init", "top1"), float("nan")),
                     "teacher entropy": final["teacher_entropy"], "KL": final["kl"],
                     "collapsed": bool(m.get(("train", "collapsed"), 0.0))})
        for r in RunDir(result.run_dir.path).read_train_log():
            logs.append({**r, "variant": label})
    table = pd.DataFrame(rows)
    table_fmt = table.assign(**{c: table[c].map(lambda v: f"{v:.4f}") for c in
                                ("knn top-1", "random init", "teacher entropy", "KL")})
    caption = f"DINO centering/sharpening ablation, {base.dataset}, {base.optim.epochs} epochs, ln(out_dim)={math.log(base.method.out_dim):.3f}"
    paths = write_tables(table_fmt, tab_dir, "ablation_dino", caption)
    paths += ablation_figure(pd.DataFrame(logs), fig_dir, base.method.out_dim)
    print(table_fmt.to_markdown(index=False))
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
