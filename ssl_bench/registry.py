"""One decorator registry for methods, backbones, datasets and evals.

Plug-ins register themselves at import time::

    @register_method("dino", config=DINOConfig)
    class DINO(Method): ...

A duplicate name is refused, so two files cannot silently shadow each other.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from ssl_bench.errors import UserError


@dataclass(frozen=True)
class Entry:
    """A registered object with its optional config dataclass and named presets."""

    name: str
    obj: Any
    config: type | None = None
    presets: dict[str, dict] = field(default_factory=dict)
    doc: str = ""


class Registry:
    """A name -> Entry mapping for one kind of plug-in."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self,
        name: str,
        config: type | None = None,
        presets: dict[str, dict] | None = None,
    ) -> Callable[[Any], Any]:
        """Decorator registering ``obj`` under ``name``; refuses duplicates."""

        def deco(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name].obj!r})")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._entries[name] = Entry(name, obj, config, dict(presets or {}), doc[0] if doc else "")
            return obj

        return deco

    def get(self, name: str) -> Entry:
        """Return the entry, or raise a UserError naming the valid choices."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            valid = ", ".join(self.names()) or (
                "none registered yet: call ssl_bench.plugins.load_all() first (the CLI and ssl_bench.engine do)"
            )
            raise UserError(f"unknown {self.kind} {name!r}{hint}; valid: {valid}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def unregister(self, name: str) -> None:
        """Remove an entry (for tests that register throw-away plug-ins)."""
        self._entries.pop(name, None)


METHODS = Registry("method")
BACKBONES = Registry("backbone")
DATASETS = Registry("dataset")
EVALS = Registry("eval")

register_method = METHODS.register
register_backbone = BACKBONES.register
register_dataset = DATASETS.register
register_eval = EVALS.register
