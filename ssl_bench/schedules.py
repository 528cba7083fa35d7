"""Per-step schedules (DINO evaluates them per iteration). A schedule is a callable
``f(step, steps_per_epoch, total_steps) -> float`` so methods never count steps themselves."""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int, int, int], float]


def constant(value: float) -> Schedule:
    return lambda step, spe, total: float(value)


def cosine(start: float, end: float) -> Schedule:
    """Cosine from ``start`` at step 0 to ``end`` at the last step (e.g. EMA momentum 0.996 -> 1)."""

    def f(step: int, spe: int, total: int) -> float:
        t = min(step / max(total - 1, 1), 1.0)
        return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))

    return f


def warmup_cosine(base: float, final: float, warmup_epochs: float, warmup_start: float = 0.0) -> Schedule:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup_epochs``, then cosine to ``final``."""

    def f(step: int, spe: int, total: int) -> float:
        warm = min(int(round(warmup_epochs * spe)), total)
        if step < warm:
            return warmup_start + (base - warmup_start) * step / warm
        t = min((step - warm) / max(total - warm - 1, 1), 1.0)
        return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))

    return f


def linear_warmup(start: float, end: float, warmup_epochs: float) -> Schedule:
    """Linear from ``start`` to ``end`` over ``warmup_epochs``, then constant (DINO teacher temperature)."""

    def f(step: int, spe: int, total: int) -> float:
        warm = warmup_epochs * spe
        if warm <= 0 or step >= warm:
            return float(end)
        return start + (end - start) * step / warm

    return f
