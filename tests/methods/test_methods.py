"""Contract tests parametrized over the method registry: a new method file is tested by adding it."""

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.train import build_method, ema_update, make_optimizer, resolve
from ssl_bench.methods.base import StepState
from ssl_bench.registry import METHODS
from tests.conftest import TINY

# small heads so the contract tests stay fast; keys a method does not have are not passed
SMALL = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "n_prototypes": 16, "queue_size": 64}
VARIANTS = [(m, []) for m in METHODS.names()] + [("moco", ["method.version=3"])]


def _method(name, extra, n_local):
    fields = METHODS.get(name).config.__dataclass_fields__
    over = [f"method.{k}={v}" for k, v in SMALL.items() if k in fields]
    cfg = resolve(build_config(TINY + [f"method={name}", *over, f"data.n_local={n_local}", *extra]))
    return cfg, build_method(cfg)


def _views(n_local, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(b, 3, 8, 8, generator=g) for _ in range(n_local)
    ]


def _two_steps(cfg, m, n_local):
    opt = make_optimizer(cfg.optim, m)
    for g in opt.param_groups:
        g["lr"] = 1e-3
    pairs = [(list(o.parameters()), list(t.parameters())) for o, t in m.ema_pairs()]
    losses = []
    for step in range(2):
        st = StepState(step, 1, 10, 20, {k: f(step, 10, 20) for k, f in m.schedules().items()})
        out = m.training_step(_views(n_local, seed=step), st)
        opt.zero_grad()
        out["loss"].backward()
        m.after_backward(st)
        opt.step()
        if pairs:
            ema_update(pairs, min(st.values["momentum"], 0.9))
        m.after_step(st)
        losses.append(out["loss"].detach())
    return losses


@pytest.mark.parametrize("name,extra", VARIANTS, ids=[f"{m}{''.join(e)}" for m, e in VARIANTS])
@pytest.mark.parametrize("n_local", [0, 2])
def test_two_steps_finite_ema_moves_state_round_trips(name, extra, n_local):
    cfg, m = _method(name, extra, n_local)
    assert m.view_spec().n_local == n_local
    targets_before = [[p.detach().clone() for p in t.parameters()] for _, t in m.ema_pairs()]
    losses = _two_steps(cfg, m, n_local)
    assert all(torch.isfinite(x) for x in losses)
    for (online, target), before in zip(m.ema_pairs(), targets_before):
        assert all(not p.requires_grad and p.grad is None for p in target.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, target.parameters())), "EMA target did not move"
    cfg2, m2 = _method(name, extra, n_local)
    m2.load_state_dict(m.state_dict())
    for (k, a), b in zip(m.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    enc = m.encoder()
    assert enc(torch.randn(2, 3, 16, 16)).shape == (2, enc.embed_dim)


@pytest.mark.parametrize("name", METHODS.names())
def test_default_views_follow_paper(name):
    paper = build_config([f"method={name}", "preset=paper"])
    local = resolve(paper).data.n_local
    assert local == {"dino": 8, "swav": 6}.get(name, 0)


def test_lr_multiplier_scales_only_the_named_submodule():
    """BYOL's ``method.predictor_lr_mult`` puts the predictor in its own groups: the engine's step sets
    their LR to the scheduled LR times the factor, the rest at the schedule; weight-decay split kept."""
    from ssl_bench.engine.train import make_train_step

    cfg, m = _method("byol", ["method.predictor_lr_mult=10"], 0)
    opt = make_optimizer(cfg.optim, m)
    pred = {id(p) for p in m.predictor.parameters()}
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in m.parameters())
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert ids <= pred if g["lr_mult"] == 10 else not ids & pred
        assert g["regularize"] == all(p.ndim > 1 for p in g["params"])
    step = make_train_step(cfg, m, opt, 10, torch.device("cpu"))
    _, _, lr, _ = step(_views(0), 3, 0)
    assert lr > 0
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(lr * g["lr_mult"])
    assert {g["lr_mult"] for g in opt.param_groups} == {1.0, 10.0}
