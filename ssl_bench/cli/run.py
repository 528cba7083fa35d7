"""``run``: train one method and evaluate it (here, on SLURM or under torchrun)."""

from __future__ import annotations

from ssl_bench.config import build_config
from ssl_bench.engine.launch import launch
from ssl_bench.engine.setup import RunResult
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
