"""Grid expansion (Hydra multirun grammar: ``key=a,b,c``) and the DINO centering/sharpening ablation."""

from __future__ import annotations

import itertools
import logging

from ssl_bench.config import to_yaml
from ssl_bench.errors import UserError
from ssl_bench.results import flatten

log = logging.getLogger(__name__)


def _split_top_level(value: str) -> list[str]:
    """Split on commas outside brackets/quotes, so ``[0.25,1.0]`` stays one value."""
    parts, depth, cur, quote = [], 0, "", None
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def expand_grid(overrides: list[str]) -> list[list[str]]:
    """Cartesian product of every ``key=a,b`` override; other overrides are shared."""
    axes = []
    for item in overrides:
        key, sep, value = item.partition("=")
        values = _split_top_level(value) if sep and key != "evals" else [value]
        axes.append([f"{key}={v}" for v in values] if sep else [item])
    return [list(combo) for combo in itertools.product(*axes)]


def ablation_grid(method: str) -> dict:
    """``configs/ablations/<method>.yaml``: the variants (label -> overrides), diagnostics and ceiling."""
    from importlib import resources

    import yaml

    folder = resources.files("ssl_bench").joinpath("configs", "ablations")
    names = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    if method not in names:
        raise UserError(
            f"no ablation for method {method!r}; valid: {', '.join(names)} (add configs/ablations/<method>.yaml)"
        )
    return yaml.safe_load(folder.joinpath(f"{method}.yaml").read_text())


def ablation_variants(grid: dict, base) -> dict[str, list[str]]:
    """The grid's variants with every ``${key}`` replaced by the base config's value of key."""
    import re

    flat = flatten(yaml_dict(base))
    sub = lambda o: re.sub(r"\$\{([^}]+)\}", lambda m: str(flat[m.group(1)]), o)
    return {label: [sub(o) for o in overrides] for label, overrides in grid["variants"].items()}


def yaml_dict(cfg) -> dict:
    import yaml

    return yaml.safe_load(to_yaml(cfg))
