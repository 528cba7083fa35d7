"""``sweep`` and ``status``: a grid of runs as one SLURM job array (or sequentially with
``launcher=local``), a manifest per sweep, and the state of each member."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ssl_bench.atomic import write_json
from ssl_bench.errors import UserError
from ssl_bench.results import RunDir, new_run_id

log = logging.getLogger(__name__)


def sweep_command(args: list[str]) -> int:
    from ssl_bench.config import build_config
    from ssl_bench.engine.launch import launch, plan
    from ssl_bench.sweep import expand_grid

    grid = expand_grid(args)
    cfgs = plan([build_config(g) for g in grid])  # validate every member before submitting any
    first = cfgs[0]
    sweep_id = new_run_id("sweep", first.method.name, first.dataset, first.seed)
    manifest_path = Path(first.results_root).parent / "sweeps" / f"{sweep_id}.json"
    manifest = {"sweep_id": sweep_id, "launcher": first.launcher, "created": time.time(), "members": []}
    if first.launcher == "slurm":
        jobs = launch(cfgs, array_folder=manifest_path.parent / sweep_id)
        for g, started in zip(grid, jobs):
            manifest["members"].append({"overrides": g, "run_dir": str(started.run.path), "job_id": started.job_id})
        write_json(manifest_path, manifest)
        print(f"submitted {len(jobs)} runs as job array {jobs[0].job_id.split('_')[0]}")
        print(f"sweep manifest: {manifest_path}\nstatus: python -m ssl_bench status {manifest_path}")
        return 0
    for g, c in zip(grid, cfgs):
        manifest["members"].append({"overrides": g, "run_dir": c.run_dir, "job_id": None})
    write_json(manifest_path, manifest)  # before training: status can follow the sweep
    launch(cfgs, on_start=lambda i, c: log.info("sweep member %d/%d: %s", i + 1, len(cfgs), " ".join(grid[i])))
    print(f"sweep manifest: {manifest_path}")
    return 0


def member_state(run_dir: str, job_id: str | None) -> dict:
    """State of one run: pending, running, done, failed (with log tail), stopped (a local run whose process
    is gone before it finished), unreadable (a file in it cannot be read, named); requeue count."""
    run = RunDir(run_dir)
    try:
        return _member_state(run, job_id)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return {
            "run_dir": str(run.path),
            "job_id": job_id,
            "state": "unreadable",
            "requeues": 0,
            "epochs_done": 0,
            "error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
        }


def _member_state(run: RunDir, job_id: str | None) -> dict:
    from ssl_bench.slurm.submit import slurm_job_state

    status = json.loads((run.path / "status.json").read_text()) if (run.path / "status.json").is_file() else {}
    state = status.get("state")
    if state is None:
        started = bool(run.read_train_log()) or run.has_checkpoint()
        state = "done" if run.read_metrics() else ("running" if started else "pending")
        if state == "running" and not job_id and not run.in_use():
            state = "stopped"  # no process holds the folder: killed or interrupted; resume=auto continues it
    slurm = slurm_job_state(job_id) if job_id else None
    if state in ("pending", "running") and slurm in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        state = "failed"
    if state == "pending" and slurm == "RUNNING":
        state = "running"
    out = {
        "run_dir": str(run.path),
        "job_id": job_id,
        "state": state,
        "requeues": status.get("requeues", 0),
        "epochs_done": len(run.read_train_log()),
    }
    if state == "failed":
        out["error"] = status.get("error") or _log_tail(run.path)
    return out


def _log_tail(path: Path, n: int = 5) -> str:
    logs = sorted(path.glob("slurm/*_log.err"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "(no log)"
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-n:])


def status_command(args: list[str]) -> int:
    if len(args) != 1:
        raise UserError("usage: python -m ssl_bench status SWEEP_MANIFEST.json|SWEEP_ID|RUN_DIR")
    target = Path(args[0])
    if target.is_dir() and (target / "config.yaml").is_file():
        status = json.loads((target / "status.json").read_text()) if (target / "status.json").is_file() else {}
        members = [{"run_dir": str(target), "job_id": status.get("job_id")}]
    else:
        if not target.is_file():
            target = Path("results/sweeps") / f"{args[0]}.json"
        if not target.is_file():
            raise UserError(f"{args[0]!r} is neither a run folder nor a sweep manifest (results/sweeps/*.json)")
        try:
            members = json.loads(target.read_text())["members"]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"sweep manifest {str(target)!r} cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''})"
            ) from None
    rows = [member_state(m["run_dir"], m.get("job_id")) for m in members]
    for r in rows:
        line = (
            f"{r['state']:<8} job {r['job_id'] or '-':<10} requeued {r['requeues']}x  epochs {r['epochs_done']}  "
            f"{r['run_dir']}"
        )
        print(line)
        if r.get("error"):
            print("    " + r["error"].replace("\n", "\n    "))
    states = ("pending", "running", "done", "failed", "stopped", "unreadable")
    counts = {s: sum(r["state"] == s for r in rows) for s in states}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v or k in states[:4]))
    return 0
