"""BYOL ``preset=cifar10`` step for step beside solo-learn (solo/methods/byol.py in its own Lightning loop:
per-crop forwards, byol_loss_func over both directions, its LARS and scheduler, the momentum updater after
each step). solo-learn is the PyTorch reference the suite's BYOL recipes cite; the official code is JAX."""

from __future__ import annotations

import pytest
import torch

from tests.parity import harness as H
from tests.parity import solo

# ResNet-18 with the CIFAR stem, projector and predictor 32 -> 16, batch 16, 3 epochs of 5 steps with 1
# warm-up epoch; the script's LARS, LR 1.0 x 16 / 256, tau 0.99 -> 1 (cosine per step). Contiguous
# convolutions on both sides (see test_moco_v3.py).
BATCH, EPOCHS, SPE, HIDDEN, DIM = 16, 3, 5, 32, 16
OVERRIDES = [
    "method=byol",
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
# fp64 on both sides: in fp32 this run amplifies rounding by ~1e4 (LARS on zero-initialised residual
# branches at LR 0.0625: the suite against itself, with only channels-last convolutions changed, parts by
# 2.6e-2 after 15 steps), which would hide any difference of the methods. Bounded apart: solo-learn's bias of
# each head's first Linear, which the suite's heads (lightly's) do not have: it starts at 0 here and gets no
# gradient, a BatchNorm follows it.
LOSS_TOL, PARAM_TOL, APART_TOL = 1e-9, 1e-9, 1e-6
BIAS_BEFORE_BN = ("projector.0.bias", "predictor.0.bias", "momentum_projector.0.bias")
APART = lambda k: k in BIAS_BEFORE_BN  # noqa: E731
_ref_name = H.prefix_map(
    (
        ("online.backbone.model.", "backbone."),
        ("online.head.layers.", "projector."),
        ("predictor.layers.", "predictor."),
        ("target.backbone.model.", "momentum_backbone."),
        ("target.head.layers.", "momentum_projector."),
    )
)


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(6000 + step)
    return [torch.randn(BATCH, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(2)]


def _state(named: dict) -> dict:
    return H.mapped(named, _ref_name) | {k: torch.zeros(HIDDEN, dtype=torch.float64) for k in BIAS_BEFORE_BN}


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, lambda m: _state(m.state_dict()), double=True)
    theirs = solo.reference_steps(
        "byol",
        "BYOL",
        "byol",
        {"proj_hidden_dim": HIDDEN, "proj_output_dim": DIM, "pred_hidden_dim": HIDDEN},
        _state(ours.init),
        views,
        (BATCH, EPOCHS, SPE),
        "byol_loss_func",
        double=True,
    )
    return H.compare(
        "byol (cifar10)", ours.records, theirs, LOSS_TOL, PARAM_TOL, apart=APART, apart_tol=APART_TOL, value_tol=1e-9
    )


@pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))
def test_byol_cifar10_step_equals_solo_learns():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
