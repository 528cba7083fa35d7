"""Keep freed CPU memory in the process (glibc), so big activations stop page-faulting every step.

glibc serves an allocation above its mmap threshold (which adapts, up to 32 MiB on 64-bit) with a fresh
``mmap`` and returns it to the kernel on ``free``; the next step's tensor of that size then faults
every page in again (the kernel zeroes each one). Forwarding all crops of one resolution as one batch
makes exactly such tensors (ViT-tiny, 768 local crops: 40 MiB MLP activations), so the grouped step
spent its gain on page faults: ~330,000 minor faults per DINO step at the benchmark setting, ~0 with
this setting (``benchmarks/allocator.py``, README). PyTorch has no caching allocator on the CPU;
jemalloc or tcmalloc through ``LD_PRELOAD`` do the same job, this needs no install.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_applied = False


def keep_freed_memory() -> bool:
    """From now on, every allocation of this process comes from the heap (no per-allocation mmap) and
    the heap is never trimmed back to the kernel; the process keeps its peak memory. Process-wide
    and not undone. Returns whether it applied (glibc only; a no-op elsewhere)."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.debug("keep_cpu_memory: not glibc, allocator left as it is")
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        ok = False
    _applied = ok
    log.debug("keep_cpu_memory: glibc mallopt %s", "applied" if ok else "refused")
    return ok
