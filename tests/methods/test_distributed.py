"""2 processes (torch.distributed, gloo, CPU) on halves of a batch == 1 process on the whole batch:
same loss and same gradients, for every method (gathered negatives, queue, Sinkhorn, center, BN, MoCo v2's
shuffle-BN across processes)."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssl_bench import dist as D
from ssl_bench.config import build_config
from ssl_bench.engine.train import build_method, prepare_distributed, resolve
from ssl_bench.methods.base import StepState
from tests.conftest import TINY

CASES = {
    "dino": ["method=dino", "method.out_dim=32", "method.hidden_dim=32", "method.bottleneck_dim=16", "data.n_local=2"],
    "simclr": ["method=simclr", "method.out_dim=16", "method.hidden_dim=32", "data.n_local=1"],
    "byol": ["method=byol", "method.out_dim=16", "method.hidden_dim=32"],
    "moco2": ["method=moco", "method.out_dim=16", "method.hidden_dim=32", "method.queue_size=32"],
    "moco3": ["method=moco", "method.version=3", "method.out_dim=16", "method.hidden_dim=32"],
    # MoCo v2 on a BN backbone: shuffle-BN (one process: 2 shuffled sub-batches; two: the shuffle spans both)
    "moco2_shuffle_bn": [
        "method=moco",
        "backbone=resnet18",
        "backbone.img_size=16",
        "method.out_dim=16",
        "method.hidden_dim=32",
        "method.queue_size=32",
        "method.shuffle_bn_groups=2",
    ],
    "swav": ["method=swav", "method.out_dim=16", "method.hidden_dim=32", "method.n_prototypes=8", "data.n_local=2"],
}
BATCH = 8


def _batch(n_local):
    g = torch.Generator().manual_seed(123)
    return [torch.randn(BATCH, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(BATCH, 3, 8, 8, generator=g) for _ in range(n_local)
    ]


def _step(over, rank=0, world=1):
    """Two steps (the second sees the updated queue/center); returns losses and first-step grads."""
    resnet = any(o.startswith("backbone=resnet") for o in over)
    cfg = resolve(build_config([o for o in TINY if not (resnet and o.startswith("backbone"))] + over))
    m = prepare_distributed(build_method(cfg), torch.device("cpu"))
    assert not resnet or m.shuffle  # the case tests shuffle-BN
    m.train()
    views = _batch(cfg.data.n_local)
    shard = BATCH // world
    views = [v[rank * shard : (rank + 1) * shard] for v in views]
    losses, grads = [], None
    for step in range(2):
        st = StepState(step, 1, 10, 20, {k: f(step, 10, 20) for k, f in m.schedules().items()})
        m.zero_grad()
        out = m.training_step(views, st)
        out["loss"].backward()
        params = [p for p in m.parameters() if p.requires_grad]
        D.all_reduce_grads(params)
        losses.append(D.all_reduce_mean(out["loss"].detach()).item())
        if grads is None:
            grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return losses, grads


def _worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res = {name: _step(over, rank, world) for name, over in CASES.items()}
        if rank == 0:
            torch.save(res, path)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "res.pt"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(path)), nprocs=2, join=True)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one(name, two_process_results):
    losses2, grads2 = two_process_results[name]
    losses1, grads1 = _step(CASES[name])
    assert losses1 == pytest.approx(losses2, rel=1e-4, abs=1e-5)
    assert grads1.keys() == grads2.keys()
    for k in grads1:
        torch.testing.assert_close(grads2[k], grads1[k], rtol=1e-3, atol=1e-5, msg=k)
