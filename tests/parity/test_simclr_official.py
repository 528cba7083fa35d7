"""SimCLR ``preset=paper`` against the official TensorFlow code (google-research/simclr tf2/: its LARS as
model.build_optimizer builds it, its contrastive loss and its warm-up + cosine LR) on the same arrays. The
whole step cannot run side by side (Keras networks); test_simclr.py runs the full step against
solo-learn's PyTorch SimCLR."""

from __future__ import annotations

import contextlib
import math
import os
import sys
from typing import Iterator
from unittest import mock

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.step import optim_schedules
from ssl_bench.engine.train import build_method, resolve
from ssl_bench.methods.base import StepState
from tests.parity import harness as H

NEEDS = ("tensorflow", "tf_keras")  # tf_keras: the Keras 2 optimizers lars_optimizer.py subclasses


def _skip() -> str | None:
    return H.needs_reason(NEEDS, "the official SimCLR code is TensorFlow", "simclr")


pytestmark = pytest.mark.skipif(_skip() is not None, reason=str(_skip()))

# The recipe on ResNet-18 with the CIFAR stem and 32-wide heads, fp64 on both sides
OVERRIDES = [
    "method=simclr",
    "preset=paper",
    "backbone=resnet18",
    "backbone.img_size=32",
    "backbone.cifar_stem=true",
    "method.hidden_dim=32",
    "method.out_dim=16",
    "device=cpu",
    "threads=0",
]
SPE, EPOCHS = 5, 3  # a 3-epoch run of 5 steps of 16 images, 1 warm-up epoch, for the schedule


@contextlib.contextmanager
def official(cfg) -> Iterator[tuple]:
    """tf2/{model, objective, lars_optimizer} as tf2/run.py runs them, its flags set to the recipe's. Shims:
    Keras 2 (``TF_USE_LEGACY_KERAS``: lars_optimizer.py subclasses ``tf.keras.optimizers.legacy``), and the
    flags model.py reads defined here (run.py, which defines them, imports tensorflow_datasets)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import flags

    o = cfg.optim
    values = {
        "optimizer": o.optimizer,
        "momentum": o.momentum,
        "weight_decay": o.weight_decay,
        "learning_rate_scaling": o.lr_scaling,
        "warmup_epochs": o.warmup_epochs,
        "train_batch_size": o.batch_size,
        "train_epochs": o.epochs,
        "train_steps": 0,
    }
    for name, value in values.items():
        if name not in flags.FLAGS:
            kind = flags.DEFINE_string if isinstance(value, str) else flags.DEFINE_float
            kind(name, value, "run.py's flag, defined by the parity harness")
    if not flags.FLAGS.is_parsed():
        flags.FLAGS(["parity"])
    saved = {name: flags.FLAGS[name].value for name in values}
    for name, value in values.items():
        flags.FLAGS[name].value = value
    folder = str(H.references() / "simclr" / "tf2")  # type: ignore[operator]
    sys.path.insert(0, folder)
    try:
        names = ("model", "objective", "lars_optimizer", "data_util", "resnet")
        gone = {k: sys.modules.pop(k) for k in names if k in sys.modules}
        import lars_optimizer
        import model
        import objective

        yield model, objective, lars_optimizer
    finally:
        sys.path.remove(folder)
        for k in names:
            sys.modules.pop(k, None)
        sys.modules.update(gone)
        for name, value in saved.items():
            flags.FLAGS[name].value = value


def _tf_name(method: torch.nn.Module, name: str) -> str:
    """A suite parameter under Keras's naming, which the official exclusions match: a BatchNorm's
    ``batch_normalization/gamma`` / ``beta``, other layers' ``kernel`` / ``bias``."""
    module_name, leaf = name.rsplit(".", 1)
    if isinstance(method.get_submodule(module_name), torch.nn.modules.batchnorm._NormBase):
        return f"{module_name}/batch_normalization/{ {'weight': 'gamma', 'bias': 'beta'}[leaf] }"
    return f"{module_name}/{ {'weight': 'kernel', 'bias': 'bias'}[leaf] }"


def _tensor(t) -> torch.Tensor:
    return torch.from_numpy(t.numpy().copy())


def test_simclr_paper_lars_steps_as_the_officials():
    """8 steps on the suite's parameters with the same gradients and a changing LR: the official
    LARSOptimizer as model.build_optimizer builds it (batch_normalization, bias excluded from decay and
    adaptation, eta 0.001, classic momentum: the LR inside the buffer) against the suite's from the recipe."""
    cfg = resolve(build_config(OVERRIDES))
    method = build_method(cfg).double()
    with official(cfg) as (model, _, _):
        import tensorflow.compat.v2 as tf

        lr_var = tf.Variable(0.0, dtype=tf.float64)
        optimizer = model.build_optimizer(lr_var)
        tf_vars = {
            n: tf.Variable(p.detach().numpy(), name=_tf_name(method, n))
            for n, p in method.named_parameters()
            if p.requires_grad
        }

        def theirs(lr: float, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            lr_var.assign(lr)
            optimizer.apply_gradients([(tf.constant(grads[n].numpy()), v) for n, v in tf_vars.items()])
            return {n: _tensor(v) for n, v in tf_vars.items()}

        H.lars_against(cfg, method, theirs)


def test_simclr_paper_loss_equals_the_officials():
    """The suite's loss (training_step on given projections) and its gradient against
    objective.add_contrastive_loss on the two views' projections stacked, as tf2/model.py calls it; in
    float32, the only dtype its masks (tf.one_hot) allow."""
    cfg = resolve(build_config(OVERRIDES))
    method = build_method(cfg)
    g = torch.Generator().manual_seed(1)
    z = [torch.randn(8, 16, generator=g).requires_grad_() for _ in range(2)]
    with mock.patch.object(method, "forward_views", lambda fn, views: z):
        loss = method.training_step([torch.zeros(1), torch.zeros(1)], StepState(0, 0, 1, 1))["loss"]
    loss.backward()
    with official(cfg) as (_, objective, _):
        import tensorflow.compat.v2 as tf

        hidden = tf.Variable(torch.cat([t.detach() for t in z]).numpy())
        with tf.GradientTape() as tape:
            want, _, _ = objective.add_contrastive_loss(hidden, hidden_norm=True, temperature=cfg.method.temperature)
        grad = _tensor(tape.gradient(want, hidden))
    assert loss.item() == pytest.approx(float(want.numpy()), rel=1e-6)
    assert torch.allclose(torch.cat([t.grad for t in z]), grad, rtol=1e-5, atol=1e-7)


def test_simclr_paper_lr_schedule_is_the_officials_but_one_step_longer():
    """model.WarmUpAndCosineDecay at every step of a 3-epoch run of 5 steps (1 warm-up epoch, batch 4096):
    its warm-up step / W and cosine over (step - W) / (T - W) are the suite's ``continuous`` ones, but its
    T is model.get_train_steps' ``examples x epochs // batch + 1``, one step more than the run takes. The
    recipe keeps the run's own length (the suite's schedules end where the run ends); the difference this
    names is bounded below for the paper's run, 1000 epochs of ImageNet at batch 4096."""
    cfg = resolve(build_config([*OVERRIDES, f"optim.epochs={EPOCHS}", "optim.warmup_epochs=1"]))
    lr_s, _ = optim_schedules(cfg.optim)
    total = SPE * EPOCHS
    with official(cfg) as (model, _, _):
        schedule = model.WarmUpAndCosineDecay(cfg.optim.lr, SPE * cfg.optim.batch_size)
        theirs = [float(schedule(float(step))) for step in range(total)]
        assert model.get_train_steps(SPE * cfg.optim.batch_size) == total + 1
    for step, want in enumerate(theirs):
        # rel 1e-6: the schedule computes in float32 (tf.keras CosineDecay)
        assert lr_s(step, SPE, total + 1) == pytest.approx(want, rel=1e-6, abs=1e-15), f"step {step}"
    paper = resolve(build_config(["method=simclr", "preset=paper"]))
    spe = 1_281_167 // paper.optim.batch_size
    full_s, _ = optim_schedules(paper.optim)
    n = spe * paper.optim.epochs
    worst = max(abs(full_s(s, spe, n) - full_s(s, spe, n + 1)) for s in range(0, n, max(1, n // 2000)))
    peak = full_s(int(paper.optim.warmup_epochs * spe), spe, n)
    assert worst / peak < 1e-5 and not math.isnan(worst)
