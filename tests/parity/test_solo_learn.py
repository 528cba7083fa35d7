"""The ``cifar10`` recipes (solo-learn's CIFAR scripts at 9187ea3) beside solo-learn's own parts: its LARS
(solo/utils/lars.py) on the same gradients, its LinearWarmupCosineAnnealingLR and MomentumUpdater step by
step, and its SimCLR and BYOL losses on the projections of each crop forwarded on its own, as its
training_step does (solo/methods/base.py:512,784). solo-learn's Lightning loop itself is not run."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from ssl_bench.config import build_config
from ssl_bench.engine.optim import make_optimizer
from ssl_bench.engine.step import optim_schedules
from ssl_bench.engine.train import build_method, resolve
from ssl_bench.methods.base import StepState
from tests.parity import harness as H

pytestmark = pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))

EPOCHS, SPE, BATCH = 3, 5, 16
TINY = [
    "backbone.img_size=32",
    "method.hidden_dim=32",
    "method.out_dim=16",
    f"optim.batch_size={BATCH}",
    f"optim.epochs={EPOCHS}",
    "optim.warmup_epochs=1",
    "device=cpu",
    "threads=0",
]
LARS_RECIPES = ["simclr", "byol", "moco_v3", "swav"]  # solo-learn's CIFAR scripts with optimizer lars
SCRIPT = {"simclr": "simclr", "byol": "byol", "moco": "mocov2plus", "moco_v3": "mocov3", "swav": "swav", "dino": "dino"}


def script(method: str) -> dict:
    """solo-learn's own recipe: scripts/pretrain/cifar/<name>.yaml of the checkout."""
    path = H.references() / "solo-learn" / "scripts" / "pretrain" / "cifar" / f"{SCRIPT[method]}.yaml"  # type: ignore[operator]
    return yaml.safe_load(path.read_text())


def solo(*modules: str) -> list:
    with H.lightning_alias():
        return H.import_reference("solo-learn", *modules)


def _cfg(method: str, *over: str):
    return resolve(build_config([f"method={method}", "preset=cifar10", *TINY, *over]))


@pytest.mark.parametrize("method", LARS_RECIPES)
def test_lars_step_equals_solo_learns(method):
    """8 steps on the same gradients and LRs: solo-learn's LARS with the script's own kwargs (eta, clip_lr,
    exclude_bias_n_norm: 1-D tensors neither adapted nor decayed; momentum 0.9 by solo/args/pretrain.py:163-164)
    over one group of every parameter, and the suite's optimizer as the recipe builds it. Equal to float32
    rounding (multi-tensor norms)."""
    (lars,) = solo("solo.utils.lars")
    cfg = _cfg(method)
    o, so = cfg.optim, script(method)["optimizer"]
    assert o.optimizer == so["name"] == "lars"
    kwargs = {"momentum": 0.9, "eta": 1e-3, "clip_lr": False, "exclude_bias_n_norm": False, **so["kwargs"]}
    ours = build_method(cfg)
    theirs = copy.deepcopy(ours)
    opt = make_optimizer(o, ours)
    params = [p for p in theirs.parameters() if p.requires_grad]
    ref = lars.LARS(params, lr=so["lr"], weight_decay=float(so["weight_decay"]), **kwargs)
    mine = [p for p in ours.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    for step in range(8):
        lr = so["lr"] * (step + 1) / 8
        for a, b in zip(mine, params):
            a.grad = torch.randn(a.shape, generator=g) * 0.01
            b.grad = a.grad.clone()
        for group in opt.param_groups:  # the engine's per-step settings, from the recipe's schedule values
            group["lr"] = lr
            if group["regularize"]:
                group["weight_decay"] = o.weight_decay
        for group in ref.param_groups:
            group["lr"] = lr
        opt.step()
        ref.step()
    worst = max((a - b).abs().max().item() for a, b in zip(mine, params))
    assert worst < 1e-6, f"{method}: LARS differs from solo-learn's by {worst:.3g}"


@pytest.mark.parametrize("method", ["simclr", "byol", "moco", "moco_v3", "swav", "dino"])
def test_lr_schedule_equals_solo_learns(method):
    """LinearWarmupCosineAnnealingLR(warmup_epochs=W*spe, max_epochs=T, warmup_start_lr, eta_min) stepped
    once per step, as Lightning steps it with interval 'step'; the suite's LR at every step."""
    (sched,) = solo("solo.utils.lr_scheduler")
    cfg = _cfg(method)
    o = cfg.optim
    lr_s, _ = optim_schedules(o)
    total = EPOCHS * SPE
    peak = script(method)["optimizer"]["lr"] * BATCH / 256  # solo/args/pretrain.py:153-154
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    s = sched.LinearWarmupCosineAnnealingLR(
        opt, warmup_epochs=int(o.warmup_epochs) * SPE, max_epochs=total, warmup_start_lr=3e-5, eta_min=0.0
    )
    for step in range(total):
        assert lr_s(step, SPE, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-12), step
        opt.step()
        s.step()


@pytest.mark.parametrize("method", ["byol", "moco", "moco_v3", "dino"])
def test_momentum_equals_solo_learns(method):
    """MomentumUpdater: step s's EMA uses base_tau at s = 0, then update_tau(cur_step=s, max_steps=T) as
    on_train_batch_end calls it after each step (solo/methods/base.py:814-838)."""
    (momentum,) = solo("solo.utils.momentum")
    cfg = _cfg(method)
    m = build_method(cfg)
    f = m.schedules()["momentum"]
    total = EPOCHS * SPE
    tau = script(method)["momentum"]
    upd = momentum.MomentumUpdater(tau["base_tau"], tau["final_tau"])
    for step in range(total):
        assert f(step, SPE, total) == pytest.approx(upd.cur_tau, rel=1e-12), step
        upd.update_tau(cur_step=step + 1, max_steps=total)


def _views(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(2)]


def test_simclr_loss_equals_solo_learns_with_per_crop_forwards():
    """solo/losses/simclr.py simclr_loss_func on z of each crop forwarded on its own, indexes repeated per
    crop, against the suite's training_step on the same views (its BatchNorm per view included)."""
    (losses,) = solo("solo.losses.simclr")
    cfg = _cfg("simclr")
    ours = build_method(cfg).train()
    theirs = copy.deepcopy(ours)
    views = _views(1)
    got = ours.training_step(views, StepState(0, 0, SPE, EPOCHS * SPE))["loss"]
    z = torch.cat([theirs.projector(theirs.backbone(v)) for v in views])
    want = losses.simclr_loss_func(z, torch.arange(BATCH).repeat(2), temperature=cfg.method.temperature)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_byol_loss_equals_solo_learns_with_per_crop_forwards():
    """solo/methods/byol.py:187-190: sum over v1 of the globals and v2 != v1 of byol_loss_func(P[v2],
    Z_momentum[v1]), each crop through online, predictor and target on its own."""
    (losses,) = solo("solo.losses.byol")
    cfg = _cfg("byol")
    ours = build_method(cfg).train()
    theirs = copy.deepcopy(ours)
    views = _views(2)
    got = ours.training_step(views, StepState(0, 0, SPE, EPOCHS * SPE))["loss"]
    p = [theirs.predictor(theirs.online(v)) for v in views]
    with torch.no_grad():
        z = [theirs.target(v) for v in views]
    want = losses.byol_loss_func(p[1], z[0]) + losses.byol_loss_func(p[0], z[1])
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
