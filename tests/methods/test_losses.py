"""Each method's loss against an independent formula written out here."""

import torch
import torch.nn.functional as F

from ssl_bench.config import build_config
from ssl_bench.engine.train import build_method, resolve
from ssl_bench.methods.base import StepState, multicrop_forward
from tests.conftest import TINY


def _m(name, *over):
    cfg = resolve(build_config(TINY + [f"method={name}", "data.n_local=0", *over]))
    m = build_method(cfg)
    m.train()
    return cfg, m


def _views(b=8, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 16, 16, generator=g) for _ in range(n)]


def _st(m):
    return StepState(0, 1, 10, 20, {k: f(0, 10, 20) for k, f in m.schedules().items()})


def nt_xent(a, b, t):
    """SimCLR eq. 1: 2N anchors, positive = the other view, 2N-2 negatives."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    n = a.shape[0]
    sim = z @ z.t() / t
    sim.fill_diagonal_(-float("inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def test_simclr_nt_xent():
    cfg, m = _m(
        "simclr", "method.out_dim=16", "method.hidden_dim=16", "method.temperature=0.3", "method.loss_reduction=sum"
    )
    v = _views()
    torch.manual_seed(0)
    out = m.training_step(v, _st(m))["loss"]
    m.eval()  # same BN statistics path is not needed: recompute in train mode with the same batch
    m.train()
    z = multicrop_forward(lambda x: m.projector(m.backbone(x)), v)
    # the reference sums the two directions (simclr objective.py: loss_a + loss_b); nt_xent averages them
    assert torch.allclose(out, 2 * nt_xent(z[0], z[1], 0.3), atol=1e-5)
    _, m = _m(
        "simclr", "method.out_dim=16", "method.hidden_dim=16", "method.temperature=0.3", "method.loss_reduction=mean"
    )
    z = multicrop_forward(lambda x: m.projector(m.backbone(x)), v)
    assert torch.allclose(m.training_step(v, _st(m))["loss"], nt_xent(z[0], z[1], 0.3), atol=1e-5)


def test_simclr_loss_equals_lightly_s_and_never_waits_for_the_device():
    """The suite's NT-Xent drops each view's self-similarity by gathering the other columns where lightly's
    NTXentLoss cuts it out with a boolean index (a host sync on a GPU): the same value and gradient to the bit,
    no sync."""
    from lightly.loss import NTXentLoss

    from ssl_bench.engine.opcount import count_ops
    from ssl_bench.methods.simclr import NTXent

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(12, 8, generator=g, requires_grad=True) for _ in range(2))
    ours, ref = NTXent(0.2)(a, b), NTXentLoss(temperature=0.2, gather_distributed=True)(a, b)
    assert torch.equal(ours, ref)
    ga, gb = torch.autograd.grad(ours, (a, b))
    ra, rb = torch.autograd.grad(ref, (a, b))
    assert torch.equal(ga, ra) and torch.equal(gb, rb)
    assert count_ops(lambda: NTXent(0.2)(a.detach(), b.detach()))["syncs"] == 0
    assert count_ops(lambda: NTXentLoss(temperature=0.2)(a.detach(), b.detach()))["syncs"] > 0  # what it replaces


def test_byol_symmetric_negative_cosine():
    cfg, m = _m("byol", "method.out_dim=16", "method.hidden_dim=16", "method.loss_reduction=sum")
    v = _views()
    out = m.training_step(v, _st(m))["loss"]
    p = multicrop_forward(lambda x: m.predictor(m.online(x)), v)
    with torch.no_grad():
        z = multicrop_forward(m.target, v)
    ref = sum(2 - 2 * F.cosine_similarity(p[i], z[1 - i], dim=1).mean() for i in range(2))  # BYOL §3.1: summed
    assert torch.allclose(out, ref, atol=1e-5)


def _infonce(q, k, queue, t=0.2):
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ queue.t()], 1) / t
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def test_moco_v2_one_direction_and_n_keys_per_step():
    """Reference moco/builder.py: q from the first view, k from the second, the batch's N keys enqueued."""
    cfg, m = _m(
        "moco",
        "method.out_dim=16",
        "method.hidden_dim=16",
        "method.queue_size=32",
        "method.temperature=0.2",
        "method.symmetric=false",
    )
    v = _views()
    queue0 = m.queue.clone()
    out = m.training_step(v, _st(m))["loss"]
    q = multicrop_forward(m.query, v)
    with torch.no_grad():
        k = multicrop_forward(m.key, v)
    assert torch.allclose(out, _infonce(q[0], k[1], queue0[0]), atol=1e-5)
    assert m.queue.shape == (1, 32, 16) and int(m.queue_ptr) == 8  # N = 8 keys, not 2N
    assert torch.allclose(m.queue[0, :8], F.normalize(k[1], dim=1), atol=1e-6)
    assert torch.equal(m.queue[0, 8:], queue0[0, 8:])


def test_moco_v2_symmetric_has_a_queue_per_view():
    """solo-learn's MoCo V2+ (mocov2plus.py): both directions averaged, q1 against queue 1 (keys of view 2)."""
    cfg, m = _m("moco", "method.out_dim=16", "method.hidden_dim=16", "method.queue_size=32", "method.symmetric=true")
    v = _views()
    queue0 = m.queue.clone()
    out = m.training_step(v, _st(m))["loss"]
    q = multicrop_forward(m.query, v)
    with torch.no_grad():
        k = multicrop_forward(m.key, v)
    ref = (_infonce(q[0], k[1], queue0[1]) + _infonce(q[1], k[0], queue0[0])) / 2
    assert torch.allclose(out, ref, atol=1e-5)
    for i in range(2):
        assert torch.allclose(m.queue[i, :8], F.normalize(k[i], dim=1), atol=1e-6)
    assert int(m.queue_ptr) == 8


def test_moco_v3_symmetric_in_batch_loss():
    cfg, m = _m(
        "moco",
        "method.version=3",
        "method.out_dim=16",
        "method.hidden_dim=16",
        "method.temperature=0.2",
        "method.loss_reduction=sum",
    )
    v = _views()
    out = m.training_step(v, _st(m))["loss"]
    q = multicrop_forward(lambda x: m.predictor(m.query(x)), v)
    with torch.no_grad():
        k = multicrop_forward(m.key, v)
    ref = 0.0
    for i in range(2):
        logits = F.normalize(q[i], dim=1) @ F.normalize(k[1 - i], dim=1).t() / 0.2
        ref = ref + F.cross_entropy(logits, torch.arange(8)) * 2 * 0.2  # moco-v3 builder.py:96, summed
    assert torch.allclose(out, ref, atol=1e-5)


def sinkhorn_ref(scores, eps, iters):
    """SwAV Alg. 1: Q = exp(scores/eps)^T, alternate row/column normalisation, return (B, K) codes."""
    q = torch.exp(scores / eps).t()
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


def test_swav_swapped_prediction():
    cfg, m = _m(
        "swav",
        "data.n_local=2",
        "method.out_dim=16",
        "method.hidden_dim=16",
        "method.n_prototypes=10",
        "data.local_size=8",
    )
    g = torch.Generator().manual_seed(0)
    v = _views() + [torch.randn(8, 3, 8, 8, generator=g) for _ in range(2)]
    out = m.training_step(v, _st(m))["loss"]
    # the paper's scores: cosine similarity of the unit embedding to the unit prototypes (no bias term)
    w = m.prototypes.heads[0].weight
    s = multicrop_forward(lambda x: F.normalize(m.projector(m.backbone(x)), dim=1) @ F.normalize(w, dim=1).t(), v)
    assert all(x.abs().max() <= 1 + 1e-5 for x in s)
    assert [n for n, _ in m.prototypes.named_parameters()] == ["heads.0.weight"]
    total, n = 0.0, 0
    for i in range(2):
        with torch.no_grad():
            q = sinkhorn_ref(s[i].detach(), 0.05, 3)
        for j in range(len(s)):
            if j != i:
                total = total - (q * F.log_softmax(s[j] / 0.1, dim=1)).sum(1).mean()
                n += 1
    assert torch.allclose(out, total / n, atol=1e-4)
    # prototypes stay on the unit sphere after a step
    m.after_step(_st(m))
    w = m.prototypes.heads[0].weight
    assert torch.allclose(w.norm(dim=1), torch.ones(10), atol=1e-5)


def test_swav_queue_joins_the_sinkhorn_step_once_full():
    """queue_size=16, batch 8: two steps fill it; from then on each global view's codes come from
    Sinkhorn over [batch scores; queue scores] (first b rows kept), as in the reference main_swav.py."""
    cfg, m = _m(
        "swav",
        "method.out_dim=16",
        "method.hidden_dim=16",
        "method.n_prototypes=10",
        "method.queue_size=16",
        "method.queue_start_epoch=0",
    )
    m.eval()  # fixed BN statistics, so re-running the forward below reproduces the step's scores
    no_queue = [m.training_step(_views(seed=s), _st(m))["loss"] for s in (0, 1)]
    assert int(m.queue_filled) == 16 and int(m.queue_ptr) == 0
    queue0 = m.queue.clone()
    v = _views(seed=2)
    out = m.training_step(v, _st(m))["loss"]
    with torch.no_grad():
        s = [m.prototypes(m._embed(x)) for x in v]
        qs = [m.prototypes(queue0[i]) for i in range(2)]
    total = 0.0
    for i in range(2):
        q = sinkhorn_ref(torch.cat([s[i], qs[i]]), 0.05, 3)[:8]
        total = total - (q * F.log_softmax(s[1 - i] / 0.1, dim=1)).sum(1).mean()
    assert torch.allclose(out, total / 2, atol=1e-4)
    # the newest projections replaced the oldest half of the ring buffer
    with torch.no_grad():
        assert torch.allclose(m.queue[0, :8], m._embed(v[0]), atol=1e-6)
    assert torch.equal(m.queue[:, 8:], queue0[:, 8:])
    assert all(torch.isfinite(x) for x in no_queue)


def test_swav_prototypes_frozen_for_a_fraction_of_the_first_epoch():
    cfg, m = _m(
        "swav",
        "method.out_dim=16",
        "method.hidden_dim=16",
        "method.n_prototypes=10",
        "method.freeze_prototypes_epochs=0.5",
    )
    for step, frozen in ((4, True), (5, False)):
        st = StepState(step, 0, 10, 20, {})
        m.zero_grad()
        m.training_step(_views(), st)["loss"].backward()
        m.after_backward(st)
        assert (m.prototypes.heads[0].weight.grad is None) == frozen


def test_moco_v2_queue_smaller_than_one_step_keeps_the_newest_keys():
    cfg, m = _m("moco", "method.out_dim=16", "method.hidden_dim=16", "method.queue_size=10", "method.symmetric=false")
    v = _views(b=16)  # 16 keys of the second view > 10 slots
    m.training_step(v, _st(m))
    with torch.no_grad():
        k = F.normalize(m.key(v[1]), dim=1)
    assert torch.allclose(m.queue[0], k[-10:], atol=1e-6) and int(m.queue_ptr) == 0
