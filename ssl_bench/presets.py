"""Finding and reading presets: the shared ``configs/<preset>.yaml``, each method's recipe
``configs/recipes/<method>/<preset>.yaml``, a user's own yaml file, and SLURM resource presets."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from ssl_bench.atomic import read_yaml
from ssl_bench.errors import ConfigError


def _configs():
    return resources.files("ssl_bench").joinpath("configs")


def preset_names() -> list[str]:
    """Every preset a method can be run with: the shared ones and each method's recipe files."""
    names = {p.name[:-5] for p in _configs().iterdir() if p.name.endswith(".yaml")}
    recipes = _configs().joinpath("recipes")
    for method in recipes.iterdir():
        if method.is_dir():
            names |= {p.name[:-5] for p in method.iterdir() if p.name.endswith(".yaml")}
    return sorted(names)


def _read_yaml(path: Any, what: str) -> dict:
    data = read_yaml(path, what) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a mapping of config keys")
    return data


def load_preset(name: str, method: str | None = None) -> tuple[dict, dict]:
    """The two layers of a preset: the shared file ``configs/NAME.yaml`` (or a yaml path) and the
    method's recipe ``configs/recipes/METHOD/NAME.yaml``; either may be absent, not both. A recipe
    ``BASE-VARIANT`` without a shared file of its own takes ``configs/BASE.yaml`` as its shared layer."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():  # a user's own recipe file
        return {}, _read_yaml(path, f"preset file {name!r}")
    shared = _configs().joinpath(f"{name}.yaml")
    recipe = _configs().joinpath("recipes", str(method), f"{name}.yaml")
    if not shared.is_file() and not recipe.is_file():
        if name in preset_names():
            raise ConfigError(
                f"method {method!r} has no recipe for preset {name!r}; recipes: "
                f"{', '.join(recipe_names(str(method))) or 'none'}"
            )
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(preset_names())} or a path to a .yaml file")
    if not shared.is_file() and recipe.is_file() and "-" in name:
        # a variant of a shared preset (``paper-resnet50``) takes that preset's shared layer (``paper.yaml``)
        shared = _configs().joinpath(f"{name.split('-')[0]}.yaml")
    layers = [_read_yaml(f, f"preset {f.name!r}") if f.is_file() else {} for f in (shared, recipe)]
    return layers[0], layers[1]


def recipe_names(method: str) -> list[str]:
    folder = _configs().joinpath("recipes", method)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def load_cluster_preset(name: str) -> dict:
    """A SLURM resource preset: ``slurm/presets/NAME.yaml`` shipped with the package, or a yaml path."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        res = resources.files("ssl_bench.slurm").joinpath("presets", f"{name}.yaml")
        if not res.is_file():
            names = sorted(
                p.name[:-5]
                for p in resources.files("ssl_bench.slurm").joinpath("presets").iterdir()
                if p.name.endswith(".yaml")
            )
            raise ConfigError(f"unknown cluster preset {name!r}; valid: {', '.join(names)} or a path to a .yaml file")
        path = Path(str(res))
    return _read_yaml(path, f"cluster preset {str(path)!r}")
