"""What a GPU pays for, counted on any device: the tensor operations a call launches, the host-device
synchronisations among them and the copies, with torch.profiler (``benchmarks/op_count.py``, the crop
tests). Counts, not times: they hold on a busy machine and do not depend on the batch size."""

from __future__ import annotations

from typing import Callable

from torch.profiler import ProfilerActivity, profile

# a read of a tensor value on the host (item, bool, float, tolist all end in _local_scalar_dense) and the
# operations whose output size depends on the data: each waits for the device
SYNCS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select")
COPIES = ("aten::copy_", "aten::to", "aten::_to_copy")
# leaf operations that change metadata or allocate: no kernel on a GPU
NO_KERNEL = frozenset(
    "aten::" + n
    for n in (
        "as_strided as_strided_ view _unsafe_view _reshape_alias reshape view_as alias detach lift_fresh expand "
        "flatten unsqueeze squeeze permute t transpose slice select narrow split chunk unbind empty empty_like "
        "empty_strided resize_ result_type resolve_conj resolve_neg"
    ).split()
)


BINARY = {"aten::" + n for n in "add mul div sub addcmul addcdiv lerp maximum minimum pow copy".split()}


def _has_aten_ancestor(e) -> bool:
    e = e.cpu_parent
    while e is not None:
        if e.name.startswith("aten::"):
            return True
        e = e.cpu_parent
    return False


def _foreach_kernels(e, kernel) -> int:
    """Launches of a multi-tensor ``_foreach_`` op on a GPU: one on its fast path, else one per tensor. The
    fast path needs the tensor lists of a binary op to line up shape for shape; a list of 0-dim tensors (one
    factor per tensor) takes the per-tensor path. (A 0-dim tensor and a Python number both record shape [];
    the number records its value.)"""
    parts = [c for c in e.cpu_children if c.name.startswith("aten::")]
    for c in parts:
        if c.name.rstrip("_") in BINARY:
            shapes, values = c.input_shapes, c.concrete_inputs or [None] * len(c.input_shapes)
            others = [(s, v) for s, v in zip(shapes[1:3], values[1:3]) if v is None]  # the tensor arguments
            if any(list(s) != list(shapes[0]) for s, _ in others):
                return sum(kernel(x) for x in parts)
    return 1


def leaf_counts(events) -> dict[str, int]:
    """Of the profiler's ``events``: ``leaf_ops``, every ``aten::`` operation with no ``aten::`` operation
    below it; ``kernels``, the launches a GPU would make: leaf ops that compute on a tensor (not a view or an
    allocation, not arithmetic on 0-dim host scalars), a multi-tensor ``_foreach_`` op counted as the GPU runs
    it (one launch on its fast path, which this CPU's per-tensor fallback hides); ``syncs``, reads of a tensor's
    value on the host (each a device wait on a GPU); ``copies``, the copy operations among the leaves."""
    aten = [e for e in events if e.name.startswith("aten::")]
    leaves = [e for e in aten if not any(c.name.startswith("aten::") for c in e.cpu_children)]

    def kernel(e) -> int:
        if e.name.startswith("aten::_foreach_"):
            return _foreach_kernels(e, kernel)
        below = sum(kernel(c) for c in e.cpu_children if c.name.startswith("aten::"))
        if below:  # a composite op: its parts launch
            return below
        # the lowest op that computes on a tensor launches (its own parts may only wrap host scalars)
        return int(e.name not in NO_KERNEL and any(isinstance(s, list) and len(s) for s in e.input_shapes))

    top = [e for e in aten if e.cpu_parent is None or not _has_aten_ancestor(e)]
    return {
        "leaf_ops": len(leaves),
        "kernels": sum(kernel(e) for e in top),
        "syncs": sum(e.name in SYNCS for e in events),
        "copies": sum(e.name in COPIES for e in leaves),
    }


def count_ops(fn: Callable[[], object], calls: int = 1) -> dict[str, float]:
    """:func:`leaf_counts` per call of ``fn``, after one call not counted (lazy initialisation is not
    per-call work)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(calls):
            fn()
    return {k: v / calls for k, v in leaf_counts(p.events()).items()}
