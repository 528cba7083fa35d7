"""MoCo V2+ (``method=moco preset=cifar10``) step for step beside solo-learn (solo/methods/mocov2plus.py in
its own Lightning loop: per-crop forwards, the symmetric loss against one queue per view, SGD, the scheduler
and the momentum updater after each step)."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.optim import make_optimizer
from ssl_bench.engine.step import make_train_step
from ssl_bench.engine.train import build_method, resolve
from tests.parity import harness as H
from tests.parity import solo

# ResNet-18 with the CIFAR stem, projector 32 -> 16, a 64-key queue per view (wraps every 4 steps), batch 16,
# 3 epochs of 5 steps with 1 warm-up epoch; the script's SGD, LR 0.3 x 16 / 256, tau 0.99 -> 0.999.
BATCH, EPOCHS, SPE, HIDDEN, DIM = 16, 3, 5, 32, 16
OVERRIDES = [
    "method=moco",
    "method.queue_size=64",
    "preset=cifar10",
    "backbone.img_size=32",
    "backbone.channels_last=false",
    f"method.hidden_dim={HIDDEN}",
    f"method.out_dim={DIM}",
    f"optim.batch_size={BATCH}",
    f"optim.epochs={EPOCHS}",
    "optim.warmup_epochs=1",
    "device=cpu",
    "threads=0",
]
# fp64 on both sides, as test_byol.py (the same backbone and schedule).
LOSS_TOL, PARAM_TOL = 1e-9, 1e-9
MAP = (
    ("query.backbone.model.", "backbone."),
    ("query.head.layers.", "projector."),
    ("key.backbone.model.", "momentum_backbone."),
    ("key.head.layers.", "momentum_projector."),
)


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7000 + step)
    return [torch.randn(BATCH, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(2)]


def _ref_name(key: str) -> str | None:
    for ours, theirs in MAP:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return None


def _state(named: dict) -> dict:
    return {k: v for k, v in named.items() if k and not k.endswith("num_batches_tracked")}


def suite_run():
    cfg = resolve(build_config(OVERRIDES))
    method = build_method(cfg).double()
    init = {k: v.clone() for k, v in method.state_dict().items()}
    opt = make_optimizer(cfg.optim, method)
    step_fn = make_train_step(cfg, method, opt, SPE, torch.device("cpu"))
    method.train()
    records = []
    for step in range(EPOCHS * SPE):
        out, _, lr, _ = step_fn(views(step), step, step // SPE)
        state = _state({_ref_name(k): v for k, v in method.state_dict().items()})
        state["queue"], state["queue_ptr"] = method.queue.transpose(1, 2), method.queue_ptr.reshape(1)
        records.append(H.StepRecord(out["loss"].item(), {"lr": lr}, H.snapshot(state)))
    return cfg, init, records


def reference_run(init):
    with H.lightning_alias():
        (moco,) = H.import_reference("solo-learn", "solo.methods.mocov2plus")
    kwargs = {"proj_hidden_dim": HIDDEN, "proj_output_dim": DIM, "queue_size": 64}
    cfg = solo.config(moco.MoCoV2Plus, "mocov2plus", BATCH, EPOCHS, 1, kwargs)
    module = moco.MoCoV2Plus(cfg).double()
    src = {_ref_name(k): v for k, v in init.items() if _ref_name(k)}
    src["queue"], src["queue_ptr"] = init["queue"].transpose(1, 2), init["queue_ptr"].reshape(1)
    H.load_mapped(module, src, lambda k: k, not_ours=("classifier.",))  # type: ignore[arg-type]
    keys = set(src)
    batches = [(torch.arange(BATCH), views(s), torch.zeros(BATCH, dtype=torch.long)) for s in range(EPOCHS * SPE)]
    states: list[tuple[dict, float]] = []
    lrs = solo.fit(
        module,
        batches,
        SPE,
        EPOCHS,
        lambda m, loss: states.append(
            (H.snapshot(_state({k: v for k, v in m.state_dict().items() if k in keys})), loss)
        ),
        (moco, "mocov2plus_loss_func"),
        precision="64-true",
        combine=lambda losses: sum(losses) / 2,  # mocov2plus.py:187-190 (a + b) / 2
    )
    return [H.StepRecord(loss, {"lr": lr}, state) for (state, loss), lr in zip(states, lrs)]


def run() -> H.Comparison:
    _, init, ours = suite_run()
    return H.compare("moco v2+ (cifar10)", ours, reference_run(init), LOSS_TOL, PARAM_TOL, value_tol=1e-9)


@pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))
def test_moco_v2_plus_cifar10_step_equals_solo_learns():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
