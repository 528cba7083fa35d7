"""``sweep`` and ``status``: a grid of runs as one SLURM job array (or sequentially with
``launcher=local``), a manifest per sweep, and the state of each member."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ssl_bench.results import RunDir
from ssl_bench.slurm.submit import slurm_job_state

log = logging.getLogger(__name__)


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
