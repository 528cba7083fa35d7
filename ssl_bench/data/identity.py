"""Which data a number was computed on: a data folder's name and a fingerprint of its contents.

The fingerprint hashes every file's path relative to the folder and its size, so one tree copied to two
places (a laptop and a cluster) has one fingerprint, and two trees that share a folder name but hold other
images have two. Reports separate rows by it (``ssl_bench/results.py``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ssl_bench.errors import UserError


_CACHE: dict[tuple, str] = {}


def _fingerprint(resolved: str) -> str:
    """sha1 over (relative path, size) of every file; the sizes are read again whenever a folder of the tree
    changed (its mtime), so a process that fingerprints one tree often (a sweep, k-NN every epoch) walks it
    once per call but stats its files once."""
    listing, folders = [], []
    for folder, dirs, files in os.walk(resolved):  # symlinked folders are not followed: no loops
        dirs.sort()
        folders.append((folder, os.stat(folder).st_mtime_ns))
        listing += [os.path.join(folder, name) for name in sorted(files)]
    key = (resolved, tuple(folders), len(listing))
    if key not in _CACHE:
        h = hashlib.sha1()
        for path in listing:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1  # a dangling link: named, not read
            h.update(f"{os.path.relpath(path, resolved)}\0{size}\n".encode())
        if len(_CACHE) > 16:
            _CACHE.clear()
        _CACHE[key] = h.hexdigest()[:16]
    return _CACHE[key]


def data_identity(root: Optional[str]) -> Optional[dict]:
    """``{"name", "fingerprint"}`` of a data folder (a single file: its name and size); None without one
    (a built-in dataset such as ``digits``)."""
    if not root:
        return None
    path = Path(root).expanduser()
    if not path.exists():
        return {"name": path.name, "fingerprint": None}
    resolved = path.resolve()
    if resolved.is_file():
        fp = hashlib.sha1(f"{resolved.name}\0{resolved.stat().st_size}".encode()).hexdigest()[:16]
        return {"name": path.name, "fingerprint": fp}
    return {"name": resolved.name, "fingerprint": _fingerprint(str(resolved))}


def run_data(cfg) -> dict:
    """The identities of the folders a run reads: ``data.root`` (pre-training) and ``eval.data_root``."""
    return {"data.root": data_identity(cfg.data.root), "eval.data_root": data_identity(cfg.eval.data_root)}


def evaluated_on(cfg) -> dict:
    """Where an evaluation with ``cfg`` takes its images: the dataset and the identity of its folder."""
    if cfg.eval.dataset:
        return {"dataset": cfg.eval.dataset, "root": data_identity(cfg.eval.data_root)}
    return {"dataset": cfg.dataset, "root": data_identity(cfg.data.root)}


def check_same_data(run, data: dict) -> None:
    """Refuse to resume ``run`` on a ``data.root`` that now holds other files than the run began on (a moved
    copy of the same tree is fine: its fingerprint is the same)."""
    before = (run.trained_on() or {}).get("data.root") or {}
    now = data.get("data.root") or {}
    if before.get("fingerprint") and now.get("fingerprint") and before["fingerprint"] != now["fingerprint"]:
        raise UserError(
            f"data.root {now['name']!r} holds other files than the run was trained on (content fingerprint "
            f"{now['fingerprint']} vs {before['fingerprint']}); resume=auto continues on the same data"
        )
