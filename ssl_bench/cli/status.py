"""``status``: the state of a sweep's members or of one run (and its log tail)."""

from __future__ import annotations

import json
from pathlib import Path

from ssl_bench.errors import UserError
from ssl_bench.results import RunDir
from ssl_bench.slurm.status import member_state


def cmd_status(args: list[str]) -> int:
    if len(args) != 1:
        raise UserError("usage: python -m ssl_bench status SWEEP_MANIFEST.json|SWEEP_ID|RUN_DIR")
    target = Path(args[0])
    if target.is_dir() and (target / "config.yaml").is_file():
        status = RunDir(target).read_status()
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
    bad = (
        not isinstance(members, list)
        or not members
        or [m for m in members if not isinstance(m, dict) or not isinstance(m.get("run_dir"), str)]
    )
    if bad:
        raise UserError(
            f"sweep manifest {str(target)!r} cannot be read: 'members' must be a list of entries with a run_dir "
            f"(got {str(members)[:80]})"
        )
    rows = [_recorded(member_state(m["run_dir"], m.get("job_id")), m) for m in members]
    for r in rows:
        line = (
            f"{r['state']:<8} job {r['job_id'] or '-':<10} requeued {r['requeues']}x  epochs {r['epochs_done']}  "
            f"{r['run_dir']}"
        )
        print(line)
        if r.get("error"):
            print("    " + r["error"].replace("\n", "\n    "))
    states = ("pending", "running", "done", "failed", "stopped", "missing", "unreadable")
    counts = {s: sum(r["state"] == s for r in rows) for s in states}
    print(", ".join(f"{v} {k}" for k, v in counts.items() if v or k in states[:4]))
    return 0


def _recorded(row: dict, member: dict) -> dict:
    """A member the sweep recorded as failed (its run raised before or while training) is failed, whatever
    its folder holds: a run that failed before its first checkpoint leaves no folder."""
    if member.get("error") and row["state"] != "done":
        return {**row, "state": "failed", "error": member["error"]}
    return row
