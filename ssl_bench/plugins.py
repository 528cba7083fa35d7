"""Discovering the plug-ins: every module of the backbone, dataset, method and evaluation packages is
imported once, and registers itself on import (``@register_method`` and friends). The CLI and the engine
call :func:`load_all`; the core below them (config, registry) never imports a plug-in."""

from __future__ import annotations

import importlib
import pkgutil

PACKAGES = ("ssl_bench.backbones", "ssl_bench.data.datasets", "ssl_bench.methods", "ssl_bench.evals")
_loaded = False


def load_all() -> None:
    """Import every plug-in module once, so that adding a file registers it."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        if hasattr(pkg, "__path__"):
            for mod in pkgutil.iter_modules(pkg.__path__):
                if not mod.name.startswith("_"):
                    importlib.import_module(f"{pkg_name}.{mod.name}")
