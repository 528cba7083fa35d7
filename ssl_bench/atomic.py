"""Atomic writes: temp file in the same folder, then ``os.replace`` (never half-written)."""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ssl_bench.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | Path, writer: Callable[[Any], None], mode: str = "w") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    try:
        with os.fdopen(fd, mode) as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text))


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, so its JSON is strict (no bare NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON: non-finite numbers are written as null."""
    write_text(path, json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    import torch

    try:
        write_atomic(path, lambda f: torch.save(obj, f), mode="wb")
    except RuntimeError as err:  # torch's zip writer reports a full disk as "unexpected pos ..."
        if "unexpected pos" in str(err) or "failed writing" in str(err):
            raise OSError(errno.ENOSPC, "No space left on device (torch.save could not write)", str(path)) from None
        raise


MAX_YAML_BYTES = 1 << 20  # configs, presets and recipes are a few KB
MAX_YAML_VALUES = 100_000  # values after alias expansion (the suite's own configs hold a few hundred)


class YAMLFileError(UserError, ValueError):
    """A YAML file that is not valid, too large, or whose aliases expand beyond :data:`MAX_YAML_VALUES`."""


def read_yaml(path: str | Path, what: str = "") -> Any:
    """A YAML file a user may have received (a preset, a run folder's config.yaml): safe_load (no Python
    tags), at most :data:`MAX_YAML_BYTES`, and refused when its aliases expand to more than
    :data:`MAX_YAML_VALUES` values: a 1 KB alias bomb would otherwise cost minutes and gigabytes later, when the
    config is merged or flattened."""
    import yaml

    path = Path(path)
    what = what or repr(str(path))
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise YAMLFileError(f"{what} is {size} bytes; valid: a YAML file of at most {MAX_YAML_BYTES} bytes")
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError as err:
        raise YAMLFileError(f"{what} is not valid YAML: {str(err).splitlines()[0]}") from None
    _bounded(data, what)
    return data


def _bounded(data: Any, what: str) -> None:
    """Count the values of ``data`` as a traversal (merge, flatten) would visit them, aliases expanded,
    stopping as soon as the count passes the bound."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise YAMLFileError(
                f"{what} expands to more than {MAX_YAML_VALUES} values through YAML aliases (&anchor / *alias); "
                "valid: a config without alias bombs"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
