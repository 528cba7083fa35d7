"""``eval`` and ``export``: score a finished run or a weights file; write a run's encoder for timm/torchvision."""

from __future__ import annotations

from ssl_bench.engine.evaluation import evaluate_run
from ssl_bench.engine.weights import FORMATS, evaluate_weights, export_run
from ssl_bench.errors import UserError


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
