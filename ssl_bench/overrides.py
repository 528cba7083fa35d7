"""The command line's ``key=value`` grammar: selectors (method=, backbone=, preset=, cluster=), the
OmegaConf dotlist for everything else, and one-line errors that name the nearest valid key."""

from __future__ import annotations

import difflib
import re
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ssl_bench.errors import ConfigError

SELECTORS = ("method", "backbone", "preset", "cluster")


def expand_shorthand(item: str) -> str:
    """``evals=knn,linear`` -> ``eval.evals=[knn,linear]``; anything else unchanged. The one place the
    shorthand is read (run, sweep, ablate, eval run=, eval weights=)."""
    key, sep, value = item.partition("=")
    if not (sep and key == "evals"):
        return item
    value = value.strip()
    listed = value.startswith("[") and value.endswith("]")  # evals=[knn,linear] as well as evals=knn,linear
    return f"eval.evals={value}" if listed else f"eval.evals=[{value}]"


# no setting holds one: paths and names reach submitit's batch script, where a newline starts a new line
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def parse_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` strings into selector values and the remaining dotlist."""
    selectors: dict[str, str] = {}
    rest: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override {item!r}: expected key=value (e.g. method=dino optim.lr=5e-4)")
        key, value = item.split("=", 1)
        if CONTROL_CHARS.search(value):  # config._validate's rule, before YAML reads the value
            raise ConfigError(
                f"bad value for {key!r}: {value!r} holds a newline or control character; valid: one line of "
                "printable text"
            )
        if key == "evals":
            rest.append(expand_shorthand(item))
        elif key in SELECTORS:
            selectors[key] = value
        else:
            rest.append(item)
    return selectors, rest


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a (structured) config."""
    keys = []
    for k, v in cfg.items() if hasattr(cfg, "items") else []:
        full = f"{prefix}{k}"
        if OmegaConf.is_dict(v):
            keys += all_keys(v, full + ".")
        else:
            keys.append(full)
    return keys


def friendly_error(err: OmegaConfBaseException, schema: Any) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        close = difflib.get_close_matches(key, all_keys(schema), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"unknown config key {key!r}{hint}")
    if isinstance(err, ValidationError):
        first = str(err).splitlines()[0]
        return ConfigError(f"bad value for {key!r}: {first}")
    return ConfigError(f"config error at {key!r}: {str(err).splitlines()[0]}")
