"""benchmarks/op_count.py's counts (ssl_bench.engine.opcount): what a GPU would launch and wait for, counted on
the CPU; the counts the crop, loss and optimizer tests assert with."""

import torch

from ssl_bench.engine.opcount import count_ops


def test_views_and_host_scalars_launch_nothing_and_host_reads_are_syncs():
    x = torch.randn(8, 4)
    assert count_ops(lambda: x.view(4, 8).t().unsqueeze(0))["kernels"] == 0
    assert count_ops(lambda: (x * 2).add_(1))["kernels"] == 2
    assert count_ops(lambda: x.sum().item())["syncs"] == 1
    assert count_ops(lambda: x[x > 0])["syncs"] >= 1  # a boolean index: its size depends on the data
    assert count_ops(lambda: torch.where(x > 0, x, 0.0))["syncs"] == 0


def test_a_multi_tensor_op_is_one_launch_on_its_fast_path_else_one_per_tensor():
    """The GPU's multi-tensor fast path needs tensor lists that line up shape for shape; a list of 0-dim
    factors (one per tensor) takes the per-tensor path. This CPU runs both per tensor."""
    a = [torch.randn(3, 3), torch.randn(4), torch.randn(2)]
    b = [torch.randn(3, 3), torch.randn(4), torch.randn(2)]
    factors = [torch.tensor(2.0), torch.tensor(3.0), torch.tensor(4.0)]
    assert count_ops(lambda: torch._foreach_add_(a, b, alpha=0.1))["kernels"] == 1
    assert count_ops(lambda: torch._foreach_mul_(a, 0.5))["kernels"] == 1
    assert count_ops(lambda: torch._foreach_norm(a))["kernels"] == 1
    assert count_ops(lambda: torch._foreach_mul(a, factors))["kernels"] == 3
    assert count_ops(lambda: [x.add_(y) for x, y in zip(a, b)])["kernels"] == 3
