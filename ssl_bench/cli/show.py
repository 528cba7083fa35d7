"""``config`` and ``list``: the resolved config and the registered names, without running anything."""

from __future__ import annotations

from ssl_bench import plugins
from ssl_bench.config import build_config, preset_names, resolve, to_yaml
from ssl_bench.registry import BACKBONES, DATASETS, EVALS, METHODS


def cmd_config(overrides: list[str]) -> int:
    """The fully resolved config (recipe, derived crop sizes, CLI overrides) as YAML."""
    plugins.load_all()
    print(to_yaml(resolve(build_config(overrides))), end="")
    return 0


def cmd_list(_: list[str]) -> int:
    plugins.load_all()
    for reg in (METHODS, BACKBONES, DATASETS, EVALS):
        print(f"{reg.kind}s:")
        for name in reg.names():
            doc = reg.get(name).doc
            print(f"  {name:<14} {doc}")
    print("presets:")
    for name in preset_names():
        print(f"  {name}")
    return 0
