"""Run summaries: the small files of each run behind a committed table, so the table can be rendered again.

``report ... summaries=DIR`` and ``ablate ... summaries=DIR`` copy, for each run the table was made from,
``config.yaml``, ``metrics.json``, ``train.jsonl``, ``provenance.json`` and ``weights.json`` (no checkpoint)
into ``DIR/<run id>/``, and write ``DIR/table.yaml``: which command rendered the table, with which options.
``DIR`` is then a results folder of its own: :func:`render` makes the same table files from it, and the
test suite re-renders every committed table (``results/summaries/NAME`` -> ``results/tables/NAME.*``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ssl_bench.atomic import read_yaml, write_text
from ssl_bench.errors import UserError
from ssl_bench.report.tables import ablation_tables, report_tables
from ssl_bench.results import CONFIG, METRICS, PROVENANCE, TRAIN_LOG, WEIGHTS_SOURCE, RunDir

SUMMARY_FILES = (CONFIG, METRICS, TRAIN_LOG, PROVENANCE, WEIGHTS_SOURCE)
TABLE = "table.yaml"


def summaries_target(dest: str | Path) -> Path:
    """``summaries=DEST`` as a folder this module may fill: new, empty or an earlier summaries folder (a
    folder of other files is refused). Commands that train check it before they start."""
    dest = Path(dest).expanduser()
    if dest.exists() and not (dest / TABLE).is_file() and any(dest.iterdir()):
        raise UserError(f"summaries={str(dest)!r} is a folder that holds other files; name a new or a summaries folder")
    return dest


def keep_summaries(runs: list[RunDir], dest: str | Path, table: dict) -> Path:
    """Copy each run's summary files to ``dest/<run id>/`` and describe the table in ``dest/table.yaml``.
    ``dest`` holds only these runs afterwards (a folder of other runs is refused, not mixed in)."""
    dest = summaries_target(dest)
    ids = {r.run_id for r in runs}
    if dest.is_dir():  # an earlier summary of this table: its runs are replaced by these
        for old in dest.iterdir():
            if old.is_dir() and old.name not in ids and (old / CONFIG).is_file():
                shutil.rmtree(old)
    for run in runs:
        out = dest / run.run_id
        out.mkdir(parents=True, exist_ok=True)
        for name in SUMMARY_FILES:
            if (run.path / name).is_file():
                shutil.copyfile(run.path / name, out / name)
    import yaml

    write_text(dest / TABLE, yaml.safe_dump(table, sort_keys=False))
    return dest


def render(summaries: str | Path, out: str | Path) -> list[Path]:
    """Render the table that ``summaries/table.yaml`` describes from the runs in ``summaries`` into ``out``."""
    summaries = Path(summaries)
    spec = read_yaml(summaries / TABLE, f"{str(summaries / TABLE)!r}")
    if not isinstance(spec, dict) or spec.get("command") not in ("report", "ablate"):
        raise UserError(f"{str(summaries / TABLE)!r} names no command (report or ablate)")
    if spec["command"] == "report":
        return report_tables(summaries, list(spec.get("options") or []), out)[2]
    members = [(m["variant"], RunDir(summaries / m["run"])) for m in spec["members"]]
    return ablation_tables(members, out, spec["name"], spec.get("caption", ""), spec.get("diagnostics") or {})[1]
