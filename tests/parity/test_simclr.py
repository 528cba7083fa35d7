"""SimCLR ``preset=cifar10`` step for step beside solo-learn (solo/methods/simclr.py in its own Lightning
loop: per-crop forwards, simclr_loss_func, its LARS and warm-up + cosine scheduler). solo-learn is the PyTorch
reference the suite's SimCLR recipes cite; the official code is TensorFlow."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.optim import make_optimizer
from ssl_bench.engine.step import make_train_step
from ssl_bench.engine.train import build_method, resolve
from tests.parity import harness as H
from tests.parity import solo

# ResNet-18 with the CIFAR stem, projector 32 -> 16, batch 16, 3 epochs of 5 steps with 1 warm-up epoch; the
# script's LARS (eta 0.02, clip_lr, 1-D tensors exempt), temperature 0.2, LR 0.4 x 16 / 256. Contiguous
# convolutions on both sides (the suite's channels-last rounds otherwise; see test_moco_v3.py).
BATCH, EPOCHS, SPE, HIDDEN, DIM = 16, 3, 5, 32, 16
OVERRIDES = [
    "method=simclr",
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
# fp32 rounding order alone (the loss as cross-entropy here, as -log(pos / (pos + neg)) there); the last BN of
# each residual branch starts at 0 and LARS amplifies its rounding (test_moco_v3.py), bounded apart
LOSS_TOL, PARAM_TOL, APART_TOL = 1e-5, 1e-5, 3e-4
APART = lambda k: ".bn2." in k and k.split(".")[1].startswith("layer")  # noqa: E731


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5000 + step)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(2)]


def _ref_name(key: str) -> str | None:
    """suite ``backbone.model.X`` / ``projector.layers.i`` -> solo-learn ``backbone.X`` / ``projector.i``."""
    for ours, theirs in (("backbone.model.", "backbone."), ("projector.layers.", "projector.")):
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return None


def _state(named: dict) -> dict:
    return {k: v for k, v in named.items() if k and not k.endswith("num_batches_tracked")}


def suite_run():
    cfg = resolve(build_config(OVERRIDES))
    method = build_method(cfg)
    init = {k: v.clone() for k, v in method.state_dict().items()}
    opt = make_optimizer(cfg.optim, method)
    step_fn = make_train_step(cfg, method, opt, SPE, torch.device("cpu"))
    method.train()
    records = []
    for step in range(EPOCHS * SPE):
        out, _, lr, _ = step_fn(views(step), step, step // SPE)
        state = _state({_ref_name(k): v for k, v in method.state_dict().items()})
        records.append(H.StepRecord(out["loss"].item(), {"lr": lr}, H.snapshot(state)))
    return cfg, init, records


def reference_run(init):
    with H.lightning_alias():
        (simclr,) = H.import_reference("solo-learn", "solo.methods.simclr")
    cfg = solo.config(simclr.SimCLR, "simclr", BATCH, EPOCHS, 1, {"proj_hidden_dim": HIDDEN, "proj_output_dim": DIM})
    module = simclr.SimCLR(cfg)
    src = {_ref_name(k): v for k, v in init.items() if _ref_name(k)}
    H.load_mapped(module, src, lambda k: k, not_ours=("classifier.",))  # type: ignore[arg-type]
    keys = set(_state({_ref_name(k): None for k in init}))
    batches = [(torch.arange(BATCH), views(s), torch.zeros(BATCH, dtype=torch.long)) for s in range(EPOCHS * SPE)]
    states: list[tuple[dict, float]] = []
    lrs = solo.fit(
        module,
        batches,
        SPE,
        EPOCHS,
        lambda m, loss: states.append((H.snapshot({k: v for k, v in m.state_dict().items() if k in keys}), loss)),
        (simclr, "simclr_loss_func"),
    )
    return [H.StepRecord(loss, {"lr": lr}, state) for (state, loss), lr in zip(states, lrs)]


def run() -> H.Comparison:
    _, init, ours = suite_run()
    return H.compare(
        "simclr (cifar10)",
        ours,
        reference_run(init),
        LOSS_TOL,
        PARAM_TOL,
        apart=APART,
        apart_tol=APART_TOL,
        value_tol=1e-9,
    )


@pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))
def test_simclr_cifar10_step_equals_solo_learns():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
