"""``run``, ``eval``, ``export``, ``config`` and ``list``."""

from __future__ import annotations

from ssl_bench.config import build_config, preset_names, to_yaml
from ssl_bench.engine.evaluation import evaluate_run
from ssl_bench.engine.launch import launch
from ssl_bench.engine.setup import RunResult, resolve
from ssl_bench.engine.weights import FORMATS, evaluate_weights, export_run
from ssl_bench.errors import UserError
from ssl_bench.registry import BACKBONES, DATASETS, EVALS, METHODS
from ssl_bench.slurm.submit import wait_for


def cmd_run(overrides: list[str]) -> int:
    cfg = build_config(overrides)
    [started] = launch([cfg])
    if started.job is not None:
        print(f"submitted SLURM job {started.job_id}\nrun folder: {started.run.path}")
        if not cfg.wait:
            return 0
        rc = wait_for(started.job, started.run)
        print(f"job {started.job_id} {'done' if rc == 0 else 'failed'}: {started.run.path}")
        if rc:
            return rc
        result = RunResult(started.run, started.run.read_metrics())
    elif not started.main:
        return 0  # another process of a torchrun / srun group reports
    else:
        result = started.result
    m = {(r["eval"], r["metric"]): r["value"] for r in result.metrics}
    print(f"run folder: {result.run_dir.path}")
    for ev in cfg.eval.evals:
        trained, init = m.get((ev, "top1")), m.get((f"{ev}@init", "top1"))
        if trained is not None:
            base = f"   random init: {init:.4f}" if init is not None else ""
            print(f"{ev} top-1 ({cfg.method.name}, {cfg.backbone.name}, {cfg.dataset}): {trained:.4f}{base}")
    below = [
        ev
        for ev in cfg.eval.evals
        if m.get((ev, "top1")) is not None
        and m.get((f"{ev}@init", "top1")) is not None
        and m[(ev, "top1")] < m[(f"{ev}@init", "top1")]
    ]
    if below:
        print(
            f"warning: {', '.join(below)} top-1 is below the same backbone at random initialisation: "
            "this run's training made the features worse"
        )
    if m.get(("train", "collapsed")):
        print("warning: the run collapsed (see train.jsonl: teacher entropy and KL)")
    return 0


def cmd_eval(overrides: list[str]) -> int:
    runs = [o.split("=", 1)[1] for o in overrides if o.startswith("run=")]
    weights = [o for o in overrides if o.startswith("weights=")]
    if len(runs) + len(weights) != 1:
        raise UserError(
            "eval needs exactly one run=RUN_DIR (a folder under results/runs) or weights=FILE "
            "(a state dict or .safetensors, with backbone=NAME unless exported by ssl_bench)"
        )
    if weights:
        result = evaluate_weights(overrides)
        print(f"run folder: {result.run_dir.path}")
    else:
        result = evaluate_run(runs[0], [o for o in overrides if not o.startswith("run=")])
    for r in result.metrics:
        print(f"{r['eval']:<12} {r['metric']:<20} {r['value']:.4f}")
    return 0


def cmd_export(overrides: list[str]) -> int:
    opts = dict(o.split("=", 1) for o in overrides if "=" in o)
    bad = [o for o in overrides if "=" not in o or o.split("=", 1)[0] not in ("run", "out", "format")]
    if bad or "run" not in opts or "out" not in opts:
        raise UserError(
            f"usage: export run=RUN_DIR out=FILE [format={'|'.join(FORMATS)}]" + (f"; got {bad[0]!r}" if bad else "")
        )
    for p in export_run(opts["run"], opts["out"], opts.get("format", "timm")):
        print(p)
    return 0


def cmd_config(overrides: list[str]) -> int:
    """The fully resolved config (recipe, derived crop sizes, CLI overrides) as YAML."""

    print(to_yaml(resolve(build_config(overrides))), end="")
    return 0


def cmd_list(_: list[str]) -> int:
    for reg in (METHODS, BACKBONES, DATASETS, EVALS):
        print(f"{reg.kind}s:")
        for name in reg.names():
            doc = reg.get(name).doc
            print(f"  {name:<14} {doc}")
    print("presets:")
    for name in preset_names():
        print(f"  {name}")
    return 0
