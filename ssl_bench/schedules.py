"""Per-step schedules. A schedule is a callable ``f(step, steps_per_epoch, total_steps) -> float`` so
methods never count steps themselves.

The references agree on the shapes (linear warm-up, half-cosine) but not on their end points; each
``convention`` is one reference's arithmetic, so a ``paper`` recipe steps exactly as its authors' code:

- ``endpoints`` (the suite's own, and the schema default): warm-up ``step / W``, cosine over
  ``(step - W) / (T - W - 1)``, so the last step takes the final value.
- ``linspace``: DINO ``utils.cosine_scheduler`` and SwAV ``main_swav.py``: warm-up ``np.linspace(start,
  base, W)`` (``step / (W - 1)``: the warm-up's last step is the base value), cosine over ``np.arange(T -
  W) / (T - W)`` (the final value is never reached).
- ``continuous``: MoCo v3 ``adjust_learning_rate`` / ``adjust_moco_momentum`` at the fractional epoch
  ``epoch + i / iters_per_epoch``: warm-up ``step / W``, cosine over ``(step - W) / (T - W)``.

``unit=epoch`` (MoCo v2's ``adjust_learning_rate``, once per epoch) evaluates a schedule at the first
step of the current epoch.
"""

from __future__ import annotations

import math
from typing import Callable

Schedule = Callable[[int, int, int], float]
CONVENTIONS = ("endpoints", "linspace", "continuous")
UNITS = ("step", "epoch")


def _check(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown schedule convention {convention!r}; valid: {', '.join(CONVENTIONS)}")


def _cos(t: float, base: float, final: float) -> float:
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))


def constant(value: float) -> Schedule:
    return lambda step, spe, total: float(value)


def per_epoch(f: Schedule) -> Schedule:
    """``f`` evaluated at the first step of the current epoch (a schedule stepped once per epoch)."""
    return lambda step, spe, total: f(step - step % max(spe, 1), spe, total)


def with_unit(f: Schedule, unit: str) -> Schedule:
    if unit not in UNITS:
        raise ValueError(f"unknown schedule unit {unit!r}; valid: {', '.join(UNITS)}")
    return per_epoch(f) if unit == "epoch" else f


def cosine(start: float, end: float, convention: str = "endpoints") -> Schedule:
    """Cosine from ``start`` at step 0 towards ``end`` (e.g. EMA momentum 0.996 -> 1); ``endpoints``
    reaches ``end`` at the last step, the references' conventions one step after it."""
    _check(convention)

    def f(step: int, spe: int, total: int) -> float:
        span = max(total - 1, 1) if convention == "endpoints" else max(total, 1)
        return _cos(min(step / span, 1.0), start, end)

    return f


def warmup_cosine(
    base: float, final: float, warmup_epochs: float, warmup_start: float = 0.0, convention: str = "endpoints"
) -> Schedule:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup_epochs``, then cosine to ``final``."""
    _check(convention)

    def f(step: int, spe: int, total: int) -> float:
        warm = min(int(round(warmup_epochs * spe)), total)
        if step < warm:
            if convention == "linspace":
                return warmup_start + (base - warmup_start) * step / max(warm - 1, 1) if warm > 1 else warmup_start
            return warmup_start + (base - warmup_start) * step / warm
        span = max(total - warm - 1, 1) if convention == "endpoints" else max(total - warm, 1)
        return _cos(min((step - warm) / span, 1.0), base, final)

    return f


def linear_warmup(start: float, end: float, warmup_epochs: float) -> Schedule:
    """Linear from ``start`` to ``end`` over ``warmup_epochs``, then constant, per step."""

    def f(step: int, spe: int, total: int) -> float:
        warm = warmup_epochs * spe
        if warm <= 0 or step >= warm:
            return float(end)
        return start + (end - start) * step / warm

    return f


def linear_warmup_per_epoch(start: float, end: float, warmup_epochs: int) -> Schedule:
    """DINO's teacher temperature (``main_dino.py`` ``DINOLoss``): ``np.linspace(start, end,
    warmup_epochs)`` indexed by the epoch, then ``end``; constant within an epoch."""

    def f(step: int, spe: int, total: int) -> float:
        epoch = step // max(spe, 1)
        w = int(warmup_epochs)
        if epoch >= w:
            return float(end)
        return start + (end - start) * epoch / (w - 1) if w > 1 else float(start)

    return f
