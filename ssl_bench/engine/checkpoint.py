"""Atomic checkpoints with everything needed to resume bit-for-bit on CPU.

A checkpoint holds tensors and plain values only (RNG states included: numpy's as a tensor, Python's as
a tuple of ints), so it loads with ``torch.load(weights_only=True)``: a checkpoint received from
someone else cannot run code when it is read.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench.atomic import save_torch
from ssl_bench.errors import UserError


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    assert not isinstance(keys, str)  # legacy=True: the MT19937 tuple
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    step: int,
    extra: dict | None = None,
) -> None:
    """``epoch`` = number of completed epochs, ``step`` = global step count (the loss center is
    part of the method's state dict)."""
    save_torch(
        path,
        {
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": rng_state(),
            "extra": extra or {},
        },
    )


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint's contents, loaded with ``weights_only=True``; a one-line error names the file when
    it is not a checkpoint or holds anything but tensors and plain values."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # it names a Python object to build: the code-running kind
            raise UserError(
                f"refusing checkpoint {str(path)!r}: it holds objects other than tensors and plain "
                "values, and loading them could run code"
            ) from None
        raise UserError(
            f"cannot read checkpoint {str(path)!r}: not a torch checkpoint ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(
            f"cannot read checkpoint {str(path)!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    if not isinstance(ckpt, dict) or "method" not in ckpt:
        raise UserError(f"{str(path)!r} is not an ssl-bench checkpoint (no 'method' state)")
    return ckpt


def load_checkpoint(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    return apply_checkpoint(read_checkpoint(path), path, method, optimizer)


def apply_checkpoint(ckpt: dict, path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Load a checkpoint already read with :func:`read_checkpoint` into ``method`` (and ``optimizer``)."""
    try:
        method.load_state_dict(ckpt["method"])
        if optimizer is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise UserError(f"checkpoint {str(path)!r} does not fit this run's model: {str(err).splitlines()[0]}") from None
    return ckpt
