"""BYOL ``preset=paper`` against the official JAX code (google-deepmind/deepmind-research byol/: its LARS,
its regression loss and its LR and target-EMA schedules) on the same arrays. The whole step cannot run
side by side (haiku networks); test_byol.py runs the full step against solo-learn's PyTorch BYOL."""

from __future__ import annotations

import contextlib
from typing import Iterator
from unittest import mock

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.engine.step import optim_schedules
from ssl_bench.engine.train import build_method, resolve
from ssl_bench.methods.base import StepState
from tests.parity import harness as H

NEEDS = ("jax", "optax", "tree")  # tree: dm-tree, which byol/utils/optimizers.py imports


def _skip() -> str | None:
    return H.needs_reason(NEEDS, "the official BYOL code is JAX", "deepmind-research")


pytestmark = pytest.mark.skipif(_skip() is not None, reason=str(_skip()))

# The recipe on ResNet-18 with the CIFAR stem and 32-wide heads, fp64 on both sides (jax_enable_x64)
OVERRIDES = [
    "method=byol",
    "preset=paper",
    "backbone=resnet18",
    "backbone.img_size=32",
    "backbone.cifar_stem=true",
    "method.hidden_dim=32",
    "method.out_dim=16",
    "device=cpu",
    "threads=0",
]


@contextlib.contextmanager
def official() -> Iterator[tuple]:
    """byol.utils.{optimizers, helpers, schedules} in fp64. Shim: its ``jax.tree_multimap`` and
    ``jax.tree_map`` (since removed from jax) are today's ``jax.tree_util.tree_map``."""
    import jax

    x64 = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        tree_map = jax.tree_util.tree_map
        with (
            mock.patch.object(jax, "tree_multimap", tree_map, create=True),
            mock.patch.object(jax, "tree_map", tree_map, create=True),
        ):
            modules = ("byol.utils.optimizers", "byol.utils.helpers", "byol.utils.schedules")
            yield tuple(H.import_reference("deepmind-research", *modules))
    finally:
        jax.config.update("jax_enable_x64", x64)


def _haiku_path(method: torch.nn.Module, name: str) -> tuple[str, str]:
    """A suite parameter under haiku's naming, which the official filters read: a norm layer's module name
    holds "norm" (haiku's ``batch_norm`` / ``layer_norm``), its leaves are ``scale`` / ``offset``; other
    layers' leaves are ``w`` and ``b``."""
    module_name, leaf = name.rsplit(".", 1)
    module = method.get_submodule(module_name)
    if isinstance(module, (torch.nn.modules.batchnorm._NormBase, torch.nn.LayerNorm, torch.nn.GroupNorm)):
        return f"{module_name}/batch_norm", {"weight": "scale", "bias": "offset"}[leaf]
    return module_name, {"weight": "w", "bias": "b"}[leaf]


def test_byol_paper_lars_steps_as_the_officials():
    """8 LARS steps on the suite's parameters with the same gradients and a changing LR: the official
    chain (weight decay, LARS adaptation and momentum, both filtered by exclude_bias_and_norm, as
    byol_experiment.py:189-195 builds it with configs/byol.py's eta 1e-3 and momentum 0.9) against the
    suite's optimizer from the recipe."""
    import jax.numpy as jnp
    import optax

    cfg = resolve(build_config(OVERRIDES))
    method = build_method(cfg).double()
    paths = {n: _haiku_path(method, n) for n, p in method.named_parameters() if p.requires_grad}
    o = cfg.optim
    with official() as (optimizers, _, _):

        def chain(lr: float):
            return optimizers.lars(
                lr,
                weight_decay=o.weight_decay,
                eta=o.lars_eta,
                momentum=o.momentum,
                weight_decay_filter=optimizers.exclude_bias_and_norm,
                lars_adaptation_filter=optimizers.exclude_bias_and_norm,
            )

        def tree(values: dict[str, torch.Tensor]) -> dict:
            out: dict = {}
            for n in paths:
                mod, leaf = paths[n]
                out.setdefault(mod, {})[leaf] = jnp.asarray(values[n].detach().numpy())
            return out

        named = dict(method.named_parameters())
        run = {"params": tree(named)}
        run["state"] = chain(0.0).init(run["params"])

        def theirs(lr: float, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            updates, run["state"] = chain(lr).update(tree(grads), run["state"], run["params"])
            run["params"] = optax.apply_updates(run["params"], updates)
            return {
                n: torch.from_numpy(jnp.asarray(run["params"][m][leaf]).__array__()) for n, (m, leaf) in paths.items()
            }

        H.lars_against(cfg, method, theirs)


def test_byol_paper_loss_equals_the_officials():
    """The suite's BYOL loss (training_step on given predictions and targets) and its gradient against
    byol_experiment.py:243-250: regression_loss over both directions, summed, averaged over the batch."""
    import jax
    import jax.numpy as jnp

    cfg = resolve(build_config(OVERRIDES))
    method = build_method(cfg).double()
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(8, 16, generator=g, dtype=torch.float64) for _ in range(4))
    preds = [p1.clone().requires_grad_(), p2.clone().requires_grad_()]
    outputs = iter([preds, [z1, z2]])
    with mock.patch.object(method, "forward_views", lambda fn, views: next(outputs)):
        loss = method.training_step([torch.zeros(1), torch.zeros(1)], StepState(0, 0, 1, 1))["loss"]
    loss.backward()
    with official() as (_, helpers, _):

        def theirs(a, b):
            rl = helpers.regression_loss(a, jnp.asarray(z2.numpy())) + helpers.regression_loss(
                b, jnp.asarray(z1.numpy())
            )
            return jnp.mean(rl)

        a, b = jnp.asarray(p1.numpy()), jnp.asarray(p2.numpy())
        want = float(theirs(a, b))
        ga, gb = jax.grad(theirs, argnums=(0, 1))(a, b)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    for got, w in ((preds[0].grad, ga), (preds[1].grad, gb)):
        assert torch.allclose(got, torch.from_numpy(jnp.asarray(w).__array__()), rtol=1e-10, atol=1e-14)


def test_byol_paper_schedules_equal_the_officials():
    """The LR (warm-up then cosine, linear scaling) and the target EMA of every step of a 3-epoch run of 5
    steps (1 warm-up epoch) against schedules.learning_schedule and schedules.target_ema as
    byol_experiment.py:328-341 calls them."""
    import jax.numpy as jnp

    spe, epochs = 5, 3
    cfg = resolve(build_config([*OVERRIDES, f"optim.epochs={epochs}", "optim.warmup_epochs=1"]))
    method = build_method(cfg)
    lr_s, _ = optim_schedules(cfg.optim)
    tau_s = method.schedules()["momentum"]
    total = spe * epochs
    o = cfg.optim
    with official() as (_, _, schedules):
        for step in range(total):
            s = jnp.asarray(step)
            lr = float(schedules.learning_schedule(s, o.batch_size, o.lr, total, int(o.warmup_epochs * spe)))
            tau = float(schedules.target_ema(s, cfg.method.momentum, total))
            # rel 1e-7: learning_schedule casts the step to float32 in the warm-up
            assert lr_s(step, spe, total) == pytest.approx(lr, rel=1e-7, abs=1e-15), f"step {step}: lr"
            assert tau_s(step, spe, total) == pytest.approx(tau, rel=1e-12), f"step {step}: target EMA"
