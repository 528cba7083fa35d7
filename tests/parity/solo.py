"""Running a solo-learn method (a Lightning module) beside the suite: its config from the checkout's CIFAR
script with the harness's tiny sizes, its initial weights from the suite's, and its own Lightning training
loop over the harness's views, its state read after every step."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Callable
from unittest import mock

import torch
import yaml

from tests.parity import harness as H


def script(name: str) -> dict:
    """solo-learn's own recipe: scripts/pretrain/cifar/<name>.yaml of the checkout."""
    path = H.references() / "solo-learn" / "scripts" / "pretrain" / "cifar" / f"{name}.yaml"  # type: ignore[operator]
    return yaml.safe_load(path.read_text())


def config(cls, name: str, batch: int, epochs: int, warmup_epochs: int, method_kwargs: dict):
    """The CIFAR script ``name`` as solo/args/pretrain.py resolves it (LR x batch / 256, LARS momentum 0.9),
    on one CPU process in fp32 with the harness's sizes, then the method's own defaults and checks."""
    import omegaconf

    d = script(name)
    for key in ("defaults", "hydra", "wandb"):
        d.pop(key, None)
    d["data"].update({"num_classes": 10, "num_large_crops": 2, "num_small_crops": 0, "dataset": "cifar10"})
    d["max_epochs"] = epochs
    o = d["optimizer"]
    o.update({"batch_size": batch, "lr": o["lr"] * batch / 256, "weight_decay": float(o["weight_decay"])})
    o.setdefault("kwargs", {}).setdefault("momentum", 0.9)  # solo/args/pretrain.py:153-164
    d.setdefault("scheduler", {})["warmup_epochs"] = warmup_epochs
    d["method_kwargs"].update(method_kwargs)
    d["performance"] = {"disable_channel_last": True}
    return cls.add_and_assert_specific_cfg(omegaconf.OmegaConf.create(d))


def fit(
    module,
    batches: list,
    spe: int,
    epochs: int,
    record: Callable[[object, float], None],
    loss_fn: tuple,
    combine: Callable[[list[float]], float] = sum,
) -> list[float]:
    """solo-learn's own training loop (Lightning's Trainer on the CPU; its 32-bit setting leaves an fp64
    module in fp64) over ``batches``. ``record(module,
    loss)`` after every step (its optimizer step and the module's own after-step hooks), with the method's
    self-supervised loss: ``loss_fn`` is (module, attribute) of its loss function, wrapped to sum its values
    over the step with ``combine`` (BYOL sums its two directions, MoCo V2+ averages them; the online
    classifier's loss is apart). Returns the LR of each step."""
    import pytorch_lightning as pl

    seen: list[float] = []
    lrs: list[float] = []

    class Steps(torch.utils.data.IterableDataset):
        def __init__(self):
            self.it = iter(batches)

        def __iter__(self):
            for _ in range(spe):
                yield next(self.it)

        def __len__(self):
            return spe

    class Record(pl.Callback):
        """The state after a step is read at the next batch's start (or the end of training): callbacks'
        on_train_batch_end runs before the module's own, where solo-learn's EMA happens."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if seen:
                record(pl_module, combine(seen))
                seen.clear()
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

        def on_train_end(self, trainer, pl_module):
            record(pl_module, combine(seen))

    mod, attr = loss_fn
    orig = getattr(mod, attr)

    def keep(*args, **kwargs):
        out = orig(*args, **kwargs)
        seen.append(out.item())
        return out

    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[Record()],
        precision=32,
    )
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with mock.patch.object(mod, attr, keep), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on SLURM, loggers and data loaders
            trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Steps(), batch_size=None))
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    return lrs


def reference_steps(
    module_name: str,
    cls_name: str,
    script_name: str,
    method_kwargs: dict,
    src: dict[str, torch.Tensor],
    views: Callable[[int], list[torch.Tensor]],
    sizes: tuple[int, int, int],
    loss_name: str,
    double: bool = False,
    combine: Callable[[list[float]], float] = sum,
) -> list[H.StepRecord]:
    """The reference side of a solo-learn parity run: ``solo.methods.<module_name>.<cls_name>`` configured
    from the CIFAR script ``script_name`` (``sizes`` = batch, epochs, steps per epoch; 1 warm-up epoch) with
    ``method_kwargs``, its tensors set from ``src`` (reference names), trained by :func:`fit` over
    ``views(step)``; each step's record holds the loss (``loss_name``, its loss function, combined over the
    step), the LR and the tensors named in ``src`` after the step."""
    batch, epochs, spe = sizes
    with H.lightning_alias():
        (mod,) = H.import_reference("solo-learn", f"solo.methods.{module_name}")
    cls = getattr(mod, cls_name)
    module = cls(config(cls, script_name, batch, epochs, 1, method_kwargs))
    if double:
        module = module.double()
    H.load_mapped(module, src, lambda k: k, not_ours=("classifier.",))
    batches = [(torch.arange(batch), views(s), torch.zeros(batch, dtype=torch.long)) for s in range(epochs * spe)]
    states: list[tuple[dict, float]] = []

    def record(m, loss: float) -> None:
        states.append((H.snapshot(H.mapped(m.state_dict(), lambda k: k if k in src else None)), loss))

    lrs = fit(
        module,
        batches,
        spe,
        epochs,
        record,
        (mod, loss_name),
        combine=combine,
    )
    return [H.StepRecord(loss, {"lr": lr}, state) for (state, loss), lr in zip(states, lrs)]
