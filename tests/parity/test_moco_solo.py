"""MoCo V2+ (``method=moco preset=cifar10``) step for step beside solo-learn (solo/methods/mocov2plus.py in
its own Lightning loop: per-crop forwards, the symmetric loss against one queue per view, SGD, the scheduler
and the momentum updater after each step)."""

from __future__ import annotations

import pytest
import torch

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
_ref_name = H.prefix_map(
    (
        ("query.backbone.model.", "backbone."),
        ("query.head.layers.", "projector."),
        ("key.backbone.model.", "momentum_backbone."),
        ("key.head.layers.", "momentum_projector."),
    )
)


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7000 + step)
    return [torch.randn(BATCH, 3, 32, 32, generator=g, dtype=torch.float64) for _ in range(2)]


def _state(named: dict) -> dict:
    """The queues are (views, dim, size) there, (views, size, dim) here."""
    queue = {"queue": named["queue"].transpose(1, 2), "queue_ptr": named["queue_ptr"].reshape(1)}
    return H.mapped(named, _ref_name) | queue


def run() -> H.Comparison:
    ours = H.suite_steps(OVERRIDES, views, EPOCHS * SPE, SPE, lambda m: _state(m.state_dict()), double=True)
    theirs = solo.reference_steps(
        "mocov2plus",
        "MoCoV2Plus",
        "mocov2plus",
        {"proj_hidden_dim": HIDDEN, "proj_output_dim": DIM, "queue_size": 64},
        _state(ours.init),
        views,
        (BATCH, EPOCHS, SPE),
        "mocov2plus_loss_func",
        double=True,
        combine=lambda losses: sum(losses) / 2,  # mocov2plus.py:187-190 (a + b) / 2
    )
    return H.compare("moco v2+ (cifar10)", ours.records, theirs, LOSS_TOL, PARAM_TOL, value_tol=1e-9)


@pytest.mark.skipif(H.skip_reason("solo-learn") is not None, reason=str(H.skip_reason("solo-learn")))
def test_moco_v2_plus_cifar10_step_equals_solo_learns():
    c = run()
    print(c.line())
    assert not c.first_difference, c.line()
