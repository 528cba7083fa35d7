"""Grid expansion (Hydra multirun grammar: ``key=a,b,c``) and the DINO centering/sharpening ablation."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any

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


def ablation_grid(method: str) -> dict:
    """``configs/ablations/<method>.yaml``: the variants (label -> overrides), diagnostics and ceiling."""
    from importlib import resources

    import yaml

    from ssl_bench.errors import UserError

    folder = resources.files("ssl_bench").joinpath("configs", "ablations")
    names = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    if method not in names:
        raise UserError(
            f"no ablation for method {method!r}; valid: {', '.join(names)} (add configs/ablations/<method>.yaml)"
        )
    return yaml.safe_load(folder.joinpath(f"{method}.yaml").read_text())


def ablation_variants(grid: dict, base) -> dict[str, list[str]]:
    """The grid's variants with every ``${key}`` replaced by the base config's value of key."""
    import re

    from ssl_bench.results import flatten

    flat = flatten(yaml_dict(base))
    sub = lambda o: re.sub(r"\$\{([^}]+)\}", lambda m: str(flat[m.group(1)]), o)
    return {label: [sub(o) for o in overrides] for label, overrides in grid["variants"].items()}


def yaml_dict(cfg) -> dict:
    import yaml

    from ssl_bench.config import to_yaml

    return yaml.safe_load(to_yaml(cfg))


def ablate_command(args: list[str]) -> int:
    """``ablate METHOD [overrides, with optional extra grids]``: run every variant of the method's grid
    (``configs/ablations/<method>.yaml``), then write the per-epoch figure of its diagnostics and a table of
    k-NN top-1, the diagnostics at the last epoch and the collapse flag."""
    import pandas as pd

    from ssl_bench.config import build_config
    from ssl_bench.engine.launch import launch
    from ssl_bench.errors import UserError
    from ssl_bench.report.plots import ablation_figure
    from ssl_bench.report.tables import write_tables
    from ssl_bench.results import flatten, new_run_id

    if not args or "=" in args[0]:
        raise UserError("usage: python -m ssl_bench ablate METHOD [key=value ...] (e.g. ablate dino)")
    method = args[0]
    grid = ablation_grid(method)
    overrides = [a for a in args[1:] if not a.startswith("out=")]
    outs = [a.split("=", 1)[1] for a in args[1:] if a.startswith("out=")]
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
        from ssl_bench.slurm.submit import wait_for

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
    rows, logs = [], []
    diagnostics = grid.get("diagnostics") or {}
    for label, run in results:
        m = {(r["eval"], r["metric"]): r["value"] for r in run.read_metrics()}
        train_log = run.read_train_log()
        final = train_log[-1]
        rows.append(
            {
                "variant": label,
                "knn top-1": m.get(("knn", "top1"), float("nan")),
                "random init": m.get(("knn@init", "top1"), float("nan")),
                **{name: final.get(key, float("nan")) for key, name in diagnostics.items()},
                "collapsed": bool(m.get(("train", "collapsed"), 0.0)),
            }
        )
        logs += [{**r, "variant": label} for r in train_log]
    table = pd.DataFrame(rows)
    table_fmt = table.assign(
        **{c: table[c].map(lambda v: f"{v:.4f}") for c in ("knn top-1", "random init", *diagnostics.values())}
    )
    ceiling_key: str = grid.get("ceiling_log_of") or ""
    ceiling = float(flatten(yaml_dict(base))[ceiling_key]) if ceiling_key else None
    caption = f"{method} ablation, {base.dataset}, {base.optim.epochs} epochs" + (
        f", ln({ceiling_key.rsplit('.', 1)[-1]})={math.log(ceiling):.3f}" if ceiling else ""
    )
    paths = write_tables(table_fmt, tab_dir, f"ablation_{method}", caption)
    paths += ablation_figure(
        pd.DataFrame(logs),
        fig_dir,
        list(diagnostics),
        ceiling,
        f"ln({ceiling_key.rsplit('.', 1)[-1]})" if ceiling_key else "",
        f"ablation_{method}",
        order=list(grid["variants"]),
    )
    print(table_fmt.to_markdown(index=False))
    print("\nwrote " + ", ".join(map(str, paths)))
    return 0
