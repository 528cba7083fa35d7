"""Random-init baselines, computed once per process.

Runs in one process that share the initial encoder weights and every setting the evaluations read (a
sweep over methods, the integration tests) get the same ``@init`` rows, so they are kept per
fingerprint of (weights, dataset, data, eval, backbone, seed, precision, device). The data fields only
the training crops read are left out of it: a DINO and a BYOL run with other crops share the baseline.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from ssl_bench.config import RunConfig

log = logging.getLogger(__name__)

_CACHE: "OrderedDict[str, list[dict]]" = OrderedDict()
MAX_ENTRIES = 16
TRAIN_ONLY_DATA = (
    "n_global",
    "n_local",
    "local_size",
    "global_scale",
    "local_scale",
    "blur",
    "solarize",
    "aug",
    "augment",
    "device_load_size",
    "normalize_on_device",
)


def key(encoder: nn.Module, cfg: RunConfig, names: list[str], device: torch.device) -> str:
    h = hashlib.sha1()
    for k, v in encoder.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    data = replace(cfg.data, **dict.fromkeys(TRAIN_ONLY_DATA))  # type: ignore[arg-type]  # None: not part of the key
    settings = (cfg.dataset, data, cfg.eval, cfg.backbone, cfg.seed, cfg.precision, str(device), list(names))
    h.update(repr(settings).encode())
    return h.hexdigest()


def get_or_compute(k: str, compute: Callable[[], list[dict]]) -> list[dict]:
    """The rows stored under ``k``, or ``compute()``'s, stored (the last ``MAX_ENTRIES`` are kept)."""
    if k in _CACHE:
        _CACHE.move_to_end(k)
        log.info(
            "random-init baseline: same initial weights and evaluation settings as an earlier run in "
            "this process, its rows reused"
        )
        return [dict(r) for r in _CACHE[k]]
    rows = compute()
    _CACHE[k] = [dict(r) for r in rows]
    while len(_CACHE) > MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return rows


def clear() -> None:
    _CACHE.clear()
