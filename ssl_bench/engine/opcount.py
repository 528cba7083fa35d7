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


def leaf_counts(events) -> dict[str, int]:
    """Of the profiler's ``events``: ``leaf_ops``, every ``aten::`` operation with no ``aten::`` operation
    below it; ``kernels``, those that compute on a tensor (not a view or an allocation, not arithmetic on
    0-dim host scalars: each is a kernel launch on a GPU); ``syncs``, reads of a tensor's value on the host
    (each a device wait on a GPU); ``copies``, the copy operations among the leaves."""
    leaves = [
        e
        for e in events
        if e.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in e.cpu_children)
    ]
    kernels = [
        e for e in leaves if e.name not in NO_KERNEL and any(isinstance(s, list) and len(s) for s in e.input_shapes)
    ]
    return {
        "leaf_ops": len(leaves),
        "kernels": len(kernels),
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
