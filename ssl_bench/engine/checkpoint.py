"""Atomic checkpoints with everything needed to resume bit-for-bit on CPU."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench.atomic import save_torch


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    step: int, extra: dict | None = None) -> None:
    """``epoch`` = number of completed epochs, ``step`` = global step count (the loss center is
    part of the method's state dict)."""
    save_torch(path, {"method": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                      "step": step, "rng": rng_state(), "extra": extra or {}})


def load_checkpoint(path: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    method.load_state_dict(ckpt["method"])
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    return ckpt
