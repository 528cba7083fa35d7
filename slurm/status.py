"""``sweep`` and ``status``: a grid of runs as one SLURM job array (or sequentially with
``launcher=local``), a manifest per sweep, and the state of each member."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from ssl_bench.results import RunDir

log = logging.getLogger(__name__)


def member_state(run_dir: str, job_id: str | None) -> dict:
    """State of one run: pending, running, done (trained and every evaluation written), failed (with its
    reason or log tail), stopped (a local run whose process is gone before it finished, before or after its
    first checkpoint), missing (a submitted job's folder is gone), unreadable (a file in it cannot be read,
    named); requeue count."""
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
    status = run.read_status()
    state = status.get("state")
    error = None
    if job_id and not run.path.is_dir():
        state = "missing"  # a submitted job's folder (made at submission) is gone: deleted or moved
    if state is None:
        started = bool(run.read_train_log()) or run.has_checkpoint()
        metrics = run.read_metrics()
        state = "done" if metrics else ("running" if started else "pending")
        alive = run.in_use()
        if state == "done":
            # done means every evaluation it was asked for wrote its rows (metrics.json is written after each)
            config = run.read_config() if (run.path / "config.yaml").is_file() else {}
            wanted = (config.get("eval") or {}).get("evals") or []
            missing = [e for e in wanted if e not in {r.get("eval") for r in metrics}]
            if missing and alive:
                state = "running"
            elif missing:
                state = "failed"
                error = f"evaluation {missing[0]} did not finish: eval run={run.path} evals={','.join(missing)}"
        if state in ("running", "pending") and not job_id and not alive and (run.path / "config.yaml").is_file():
            # no process holds a folder it wrote: killed or interrupted; resume=auto continues it
            state = "stopped"
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
        out["error"] = error or status.get("error") or _log_tail(run.path)
    return out


def _log_tail(path: Path, n: int = 5) -> str:
    logs = sorted(path.glob("slurm/*_log.err"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "(no log)"
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-n:])


def slurm_job_state(job_id: str) -> Optional[str]:
    """JobState from ``scontrol show job`` (PENDING, RUNNING, COMPLETED, FAILED, ...), None if unknown.
    scontrol rather than sacct: clusters without accounting storage (like the test cluster) lack sacct."""
    import subprocess

    try:
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = re.findall(r"JobState=(\S+)", out)
    if not states:
        return None
    for s in ("RUNNING", "PENDING", "REQUEUED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"):
        if s in states:
            return s
    return states[0]
