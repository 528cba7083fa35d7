"""The crop counts a method asks for (no torch, no torchvision: methods and configs import it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewSpec:
    """How many crops a method wants: ``n_global`` at ``global_size``, ``n_local`` at ``local_size``."""

    n_global: int = 2
    n_local: int = 0
