"""Discovering the plug-ins: every module of the backbone, dataset, method and evaluation packages is
imported once, and registers itself on import (``@register_method`` and friends), then every module that
an installed package names in the ``ssl_bench.plugins`` entry-point group (a method in the researcher's own
package, docs/extending.md). The CLI and the engine call :func:`load_all`; the core below them (config,
registry) never imports a plug-in."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil

from ssl_bench.errors import UserError

GROUP = "ssl_bench.plugins"
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
    for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as err:
            dist = ep.dist.name if ep.dist is not None else "an installed package"
            first = (str(err).splitlines() or [""])[0]
            raise UserError(
                f"plug-in {ep.name} = {ep.value!r} (entry point {GROUP} of {dist}) failed to import: "
                f"{type(err).__name__}: {first}"
            ) from err
