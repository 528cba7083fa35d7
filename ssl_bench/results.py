"""Run-folder layout, writing one run, and loading every run into one tidy DataFrame.

``results/runs/<run_id>/``: ``config.yaml`` (resolved), ``train.jsonl`` (one line per epoch),
``metrics.json`` (one row per eval x metric), ``checkpoint.pt``. Every file is written atomically
and belongs to one run, so concurrent runs cannot corrupt each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import yaml

from ssl_bench.atomic import YAMLFileError, finite, read_yaml, write_json, write_text
from ssl_bench.errors import UserError

log = logging.getLogger(__name__)

CONFIG, TRAIN_LOG, METRICS, CHECKPOINT, LOCK = "config.yaml", "train.jsonl", "metrics.json", "checkpoint.pt", ".lock"
PROVENANCE = "provenance.json"
STATUS = "status.json"  # the run's state (pending, running, done, failed, ...), written by the launchers
WEIGHTS_SOURCE = "weights.json"  # `eval weights=` runs: the file scored and the export's record of its run
# the temp names atomic.write_atomic gives the files above while writing them (mkstemp: 8 random characters)
OWN_TEMP = re.compile(
    r"\.("
    + "|".join(
        re.escape(n) for n in (CONFIG, TRAIN_LOG, METRICS, CHECKPOINT, PROVENANCE, WEIGHTS_SOURCE, "status.json")
    )
    + r")\.[A-Za-z0-9_]{8}\.tmp"
)

# Config keys that may differ when a run is resumed: they do not change its training trajectory
# (evaluation, logging, where things live, how it is launched). Everything else must match.
RESUME_MAY_DIFFER = (
    "eval.",
    "progress",
    "run_dir",
    "results_root",
    "resume",
    "launcher",
    "nproc",
    "wait",
    "cluster.",
    "threads",
    "device",
    "keep_cpu_memory",
    "checkpoint_every_steps",
    "compile",
    "preset",
    "data.root",
    "data.download",
    "data.num_workers",
    "log.",
)


def new_run_id(method: str, backbone: str, dataset: str, seed: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{method}-{backbone}-{dataset}-s{seed}-{secrets.token_hex(2)}"


def fresh_run_dir(cfg):
    """``cfg`` with its run folder decided (kept when set, else a new id under ``results_root``), so that
    every process of the run, and every requeue, shares it. The one place a run folder is named."""
    from dataclasses import replace

    if cfg.run_dir:
        return cfg
    rid = new_run_id(cfg.method.name, cfg.backbone.name, cfg.dataset, cfg.seed)
    return replace(cfg, run_dir=str(Path(cfg.results_root) / rid))


def unique_run_dirs(cfgs: list) -> list:
    """Members of one sweep created in the same second could get one id: make each folder unique."""
    from dataclasses import replace

    out, seen = [], set()
    for i, c in enumerate(cfgs):
        out.append(replace(c, run_dir=f"{c.run_dir}-{i}") if c.run_dir in seen else c)
        seen.add(out[-1].run_dir)
    return out


class RunDir:
    """One run's folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def holds_run(self) -> bool:
        return self.path.is_dir() and any(self.path.iterdir())

    def create(self, resume: bool = False) -> bool:
        """Take this folder for a run: a folder that already holds one is refused unless ``resume`` (then it
        is continued). Returns whether this call created the folder (so a failed start can remove it)."""
        if self.holds_run():
            if resume:
                return False
            raise UserError(
                f"run_dir {str(self.path)!r} already holds a run; pass resume=auto to continue it or pick a new run_dir"
            )
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        return created

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    def write_config(self, text: str) -> None:
        write_text(self.path / CONFIG, text)

    def read_config(self) -> dict:
        data = read_yaml(self.path / CONFIG, f"{str(self.path / CONFIG)!r}")
        if not isinstance(data, dict):
            raise YAMLFileError(f"{str(self.path / CONFIG)!r} is not a run's config (a mapping of config keys)")
        return data

    def check_resume(self, new_config: dict, recorded: dict | None = None) -> None:
        """Refuse to resume with settings that change the training trajectory (batch, crops, optimizer,
        schedules, method, dataset, seed, ...): one line naming the keys that differ. ``recorded``: the flat
        settings the checkpoint itself carries (what it was trained with, whatever config.yaml now says);
        without them (checkpoints from before they were recorded) the folder's config.yaml."""
        saved = dict(recorded) if recorded is not None else flatten(self.read_config())
        new = flatten(new_config)
        first = ("method.name", "dataset", "backbone.name")  # named first: they explain the rest
        changed = sorted(
            (k for k in set(saved) | set(new) if saved.get(k) != new.get(k) and not k.startswith(RESUME_MAY_DIFFER)),
            key=lambda k: (k not in first, k),
        )
        if changed:
            diff = ", ".join(f"{k} {saved.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            raise UserError(
                f"run_dir {str(self.path)!r} was trained with other settings ({diff}{more}); resume=auto "
                "continues the same run (only eval.*, logging, paths and launch settings may differ)"
            )

    def in_use(self) -> bool:
        """Whether a process holds this folder's lock now (a training run that is alive)."""
        import fcntl

        if not (self.path / LOCK).is_file():
            return False
        fd = os.open(self.path / LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder for this process (an exclusive ``flock`` on ``.lock``, released on exit
        even when the process dies, so a lock left by a killed run is never stale). A second process is
        refused with one line naming the holder."""
        import fcntl

        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise UserError(
                    f"run_dir {str(self.path)!r} is in use by {holder}; wait for it to end or pick another run_dir"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
            for tmp in self.path.glob(".*.tmp"):  # half-written files of a writer killed mid-save
                if OWN_TEMP.fullmatch(tmp.name):  # only the suite's own: a user's *.tmp in run_dir stays
                    log.info("removing %s, left by a run killed while writing", tmp)
                    tmp.unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def read_status(self) -> dict:
        """``status.json`` ({} when there is none); a file that is not a JSON object is a one-line error."""
        path = self.path / STATUS
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"{str(path)!r} is not readable JSON ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{str(path)!r} is not a run status (a JSON object), it holds {str(data)[:60]}")
        return data

    def write_status(self, **fields: Any) -> None:
        """Update ``status.json`` with ``fields`` (an unreadable one is replaced)."""
        try:
            old = self.read_status()
        except UserError:
            old = {}
        write_json(self.path / STATUS, {**old, **fields, "updated": time.time()})

    def provenance(self) -> list[dict]:
        """The provenance entries, one per start (``engine/provenance.py``); [] when none or unreadable."""
        try:
            entries = json.loads((self.path / PROVENANCE).read_text())
        except (OSError, ValueError):
            return []
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def trained_on(self) -> dict:
        """The data identities (``data/identity.run_data``) of the run's first start; {} for older runs."""
        entries = self.provenance()
        data = entries[0].get("data") if entries else None
        return data if isinstance(data, dict) else {}

    def read_train_log(self) -> list[dict]:
        p = self.path / TRAIN_LOG
        if not p.is_file():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def write_train_log(self, records: Iterable[dict]) -> None:
        write_text(
            self.path / TRAIN_LOG,
            "".join(json.dumps(finite(r), sort_keys=True, allow_nan=False) + "\n" for r in records),
        )

    def append_train_log(self, record: dict) -> None:
        """Rewrite the whole (small) log atomically with the new record, replacing one of the same epoch."""
        records = [r for r in self.read_train_log() if r.get("epoch") != record.get("epoch")]
        self.write_train_log(records + [record])

    def read_metrics(self) -> list[dict]:
        p = self.path / METRICS
        return json.loads(p.read_text()) if p.is_file() else []

    def write_metrics(self, rows: list[dict]) -> None:
        """Merge rows into metrics.json; a new row replaces an old one with the same eval, metric, evaluation
        settings and data (``row_key``): an evaluation with other settings or on other data adds rows."""
        new_keys = {row_key(r) for r in rows}
        kept = [r for r in self.read_metrics() if row_key(r) not in new_keys]
        write_json(self.path / METRICS, kept + list(rows))


def _eval_settings(row: dict) -> dict:
    """The evaluation settings of a metrics row that can change its number (``eval.*`` minus launch options)."""
    settings = row.get("settings")
    if not isinstance(settings, dict):
        settings = {}
    return {k: v for k, v in settings.items() if k != "data_root" and not f"eval.{k}".startswith(NOT_A_SETTING)}


def row_key(row: dict) -> tuple:
    """What a metrics row is a number of: its eval and metric, the settings and the data it was computed on."""
    on = row.get("on") or {}
    root = on.get("root") or {}
    where = (on.get("dataset"), root.get("fingerprint") or root.get("name"))
    return row["eval"], row["metric"], json.dumps(_eval_settings(row), sort_keys=True), where


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Config keys that say where and how a run was launched, not what it computed: a report does not treat
# two runs as different settings because of them (``seed`` is the replicate axis, never a setting). The
# data folders are settings, compared by content (``_data_label``), not by path.
NOT_A_SETTING = tuple(k for k in RESUME_MAY_DIFFER if k not in ("eval.", "preset", "data.root")) + (
    "seed",
    "eval.knn_every",
    "eval.baseline",
    "eval.evals",
    "deterministic",
)
DATA_COLUMNS = ("data.root", "eval.data_root")
_ID_KEYS = {"method.name": "method", "backbone.name": "backbone", "optim.epochs": "epochs"}


def _cell(v: Any) -> Any:
    """A config value as a hashable table cell (lists become their YAML flow text)."""
    return (
        yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
        if isinstance(v, (list, dict))
        else v
    )


def _data_label(identity: Any) -> Any:
    """A data folder as a table cell: ``name#fingerprint`` (shortened to the name by ``_short_labels``
    when no other folder of that name holds other files); None without a folder."""
    if not isinstance(identity, dict) or not identity.get("name"):
        return None
    return f"{identity['name']}#{identity['fingerprint']}" if identity.get("fingerprint") else identity["name"]


def _identity(run: RunDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """The columns that identify a run (id, method, backbone, dataset, epochs, seed) and every other
    resolved config key (dotted, e.g. ``optim.lr``), so that reports can group and filter on any setting.
    The data folders are their recorded identities (name and content), not their paths."""
    cfg = run.read_config()
    if cfg.get("weights"):
        return _weights_identity(run, cfg)
    ids = {
        "run_id": run.run_id,
        "method": cfg["method"]["name"],
        "backbone": cfg["backbone"]["name"],
        "dataset": cfg["dataset"],
        "preset": cfg.get("preset") or "—",
        "epochs": cfg["optim"]["epochs"],
        "seed": cfg["seed"],
    }
    settings = {k: _cell(v) for k, v in flatten(cfg).items() if k not in _ID_KEYS and k not in ids}
    recorded = run.trained_on()
    for col in DATA_COLUMNS:
        path = settings.get(col)
        settings[col] = _data_label(recorded.get(col) if col in recorded else path and {"name": Path(path).name})
    return ids, settings


# where an `eval weights=` run's own config decides the number: the evaluation and the images it read
_EVAL_TIME_DATA = (
    "data.train_per_class",
    "data.test_per_class",
    "data.val_per_class",
    "data.train_split",
    "data.test_split",
    "data.global_size",
)


def _weights_identity(run: RunDir, cfg: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """An ``eval weights=`` run: the method, recipe, epochs, training settings and data of the run the file
    was exported from (its export ``.json``), "n/a" for a file without one; the evaluation settings and the
    data evaluated on are the scoring run's own."""
    try:
        source = json.loads((run.path / WEIGHTS_SOURCE).read_text())
    except (OSError, ValueError):
        source = {}
    source = source if isinstance(source, dict) else {}
    trained = source.get("config") if isinstance(source.get("config"), dict) else None
    own = flatten(cfg)
    file = source.get("file") or Path(cfg["weights"]).name
    ids = {
        "run_id": run.run_id,
        "method": trained["method"]["name"] if trained else f"weights:{Path(file).stem}",
        "backbone": cfg["backbone"]["name"],
        "dataset": cfg["dataset"],
        "preset": (trained.get("preset") or "—") if trained else "n/a",
        "epochs": trained["optim"]["epochs"] if trained else None,
        "seed": trained["seed"] if trained else cfg["seed"],
    }
    training = (
        {k: v for k, v in flatten(trained).items() if k.startswith(("method.", "optim.", "data."))} if trained else {}
    )
    evaluation = {
        k: v for k, v in own.items() if not k.startswith(("method.", "optim.", "data.")) or k in _EVAL_TIME_DATA
    }
    settings = {k: _cell(v) for k, v in {**training, **evaluation}.items() if k not in _ID_KEYS and k not in ids}
    settings["weights"] = file
    recorded = source.get("trained_on")
    if not isinstance(recorded, dict):
        recorded = {}
    settings["data.root"] = _data_label(recorded.get("data.root")) if trained else None
    evaluated = run.trained_on() or {}
    settings["eval.data_root"] = _data_label(evaluated.get("eval.data_root"))
    return ids, settings


def _row_settings(row: dict, settings: dict[str, Any]) -> dict[str, Any]:
    """A metrics row's own evaluation settings and data over the run's config (a later ``eval run=`` with
    other settings, or on another dataset, wrote them): what this number was computed with."""
    own = row.get("settings")
    out = dict(settings)
    if isinstance(own, dict):
        out.update({f"eval.{k}": _cell(v) for k, v in own.items() if k != "data_root"})
    on = row.get("on")
    if isinstance(on, dict):
        label = _data_label(on.get("root"))
        if out.get("eval.dataset"):  # a transfer evaluation: the folder of eval.dataset it read
            out["eval.data_root"] = label
        else:  # the run's own dataset: named only when the folder evaluated holds other files than trained on
            out["eval.data_root"] = None if _same_data(label, settings.get("data.root")) else label
    return out


def _same_data(a: Any, b: Any) -> bool:
    """Two data labels are one folder: same fingerprint, or the same name where one has none recorded."""
    if a is None or b is None:
        return a is None
    if "#" in a and "#" in b:
        return a == b
    return a.partition("#")[0] == b.partition("#")[0]


def _short_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Data folder cells as their names, with (8 characters of) the fingerprint kept where one name holds
    other files in another run or column: two trees called ``data`` stay two."""
    cols = [c for c in DATA_COLUMNS if c in df.columns]
    labels = {v for c in cols for v in df[c].dropna().unique() if isinstance(v, str)}
    prints: dict[str, set] = {}
    for v in labels:
        name, _, fp = v.partition("#")
        prints.setdefault(name, set()).add(fp)
    short = {v: v.partition("#")[0] if len(prints[v.partition("#")[0]]) == 1 else v[: len(v) - 8] for v in labels}
    for c in cols:
        df[c] = df[c].map(lambda v: short.get(v, v))
    return df


def setting_columns(df: pd.DataFrame) -> list[str]:
    """The dotted config columns of a runs frame that are settings (not paths, launch options or seed)."""
    return [c for c in df.columns if c in df.attrs.get("settings", ()) and not c.startswith(NOT_A_SETTING)]


_UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError)


def _read_runs(root: str | Path, read: Callable[[RunDir], Any]) -> tuple[list, list[str]]:
    """``read(run)`` for every run folder under ``root`` (None results dropped). A run whose files cannot be
    read is skipped with a warning naming it, never a traceback for all; the skipped folders come second."""
    out, skipped = [], []
    for cfg_path in sorted(Path(root).glob(f"*/{CONFIG}")):
        run = RunDir(cfg_path.parent)
        try:
            value = read(run)
        except _UNREADABLE as err:
            text = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("skipping run %s: a file in it cannot be read (%s: %s)", run.path, type(err).__name__, text)
            skipped.append(str(run.path))
            continue
        if value is not None:
            out.append(value)
    return out, skipped


def _metric_rows(run: RunDir) -> list[dict] | None:
    metrics = run.read_metrics()
    if not metrics:
        return None
    ids, settings = _identity(run)
    collapsed = next((r["value"] for r in metrics if r["eval"] == "train" and r["metric"] == "collapsed"), None)
    base = {**ids, "collapsed": None if collapsed is None else bool(collapsed)}
    return [
        {
            **base,
            "eval": r["eval"],
            "metric": r["metric"],
            "value": float("nan") if r["value"] is None else float(r["value"]),
            **_row_settings(r, settings),
        }
        for r in metrics
    ]


def load_runs(root: str | Path = "results/runs") -> pd.DataFrame:
    """Every finished run under ``root`` as a tidy frame: one row per (run, eval, metric). Unreadable
    runs are skipped with a warning; their folders are listed in ``frame.attrs["skipped"]``."""
    per_run, skipped = _read_runs(root, _metric_rows)
    rows = [r for run_rows in per_run for r in run_rows]
    cols = [
        "run_id",
        "method",
        "backbone",
        "dataset",
        "preset",
        "epochs",
        "seed",
        "eval",
        "metric",
        "value",
        "collapsed",
    ]
    df = _short_labels(pd.DataFrame(rows, columns=None if rows else cols))
    df.attrs["skipped"] = skipped
    df.attrs["settings"] = [c for c in df.columns if c not in cols]
    return df


def _log_frame(run: RunDir) -> pd.DataFrame | None:
    log_rows = run.read_train_log()
    if not log_rows:
        return None
    ids, settings = _identity(run)
    df = pd.DataFrame(log_rows)
    cols = {k: v for k, v in {**ids, **settings}.items() if k not in df.columns}
    df = pd.concat([df, pd.DataFrame({k: [v] * len(df) for k, v in cols.items()}, index=df.index)], axis=1)
    df.attrs["settings"] = list(settings)
    return df


def load_train_logs(root: str | Path = "results/runs") -> pd.DataFrame:
    """Per-epoch training logs of every run under ``root``: one row per (run, epoch); unreadable runs
    are skipped with a warning (``frame.attrs["skipped"]``)."""
    frames, skipped = _read_runs(root, _log_frame)
    out = _short_labels(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
    out.attrs["skipped"] = skipped
    out.attrs["settings"] = list(dict.fromkeys(k for f in frames for k in f.attrs["settings"]))
    return out
