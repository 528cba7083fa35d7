"""SimCLR ``preset=cifar10`` step for step beside solo-learn (solo/methods/simclr.py in its own Lightning
loop: per-crop forwards, simclr_loss_func, its LARS and warm-up + cosine scheduler). solo-learn is the PyTorch
reference the suite's SimCLR recipes cite; the official code is TensorFlow."""

from __future__ import annotations

import pytest
import torch

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


# suite ``backbone.model.X`` / ``projector.layers.i`` -> solo-learn ``backbone.X`` / ``projector.i``
_ref_name = H.prefix_map((("backbone.model.", "backbone."), ("projector.layers.", "projector.")))


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, lambda m: H.mapped(m.state_dict(), _ref_name))
    theirs = solo.reference_steps(
        "simclr",
        "SimCLR",
        "simclr",
        {"proj_hidden_dim": HIDDEN, "proj_output_dim": DIM},
        H.mapped(ours.init, _ref_name),
        views,
        (BATCH, EPOCHS, SPE),
        "simclr_loss_func",
    )
    return H.compare(
        "simclr (cifar10)", ours.records, theirs, LOSS_TOL, PARAM_TOL, apart=APART, apart_tol=APART_TOL, value_tol=1e-9
    )


@pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))
def test_simclr_cifar10_step_equals_solo_learns():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
