"""Datasets and the shared multi-crop data layer (imported on first use: torchvision loads in ~1 s)."""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "DataSplits": "datasets",
    "build_datasets": "datasets",
    "eval_transform": "datasets",
    "CropPolicy": "multicrop",
    "MultiCropTransform": "multicrop",
    "crop_policy": "multicrop",
    "ViewSpec": "views",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
