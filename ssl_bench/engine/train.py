"""The training loop shared by every method: the run folder, resume, the epoch loop with its checkpoints,
and the evaluations at the end. Building blocks live beside it: ``setup`` (config, device, method),
``step`` (one optimisation step), ``evaluation`` (evaluations and ``eval run=``)."""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import time

import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from ssl_bench import dist as D
from ssl_bench.config import RunConfig, to_yaml
from ssl_bench.data.datasets import DataSplits, run_datasets
from ssl_bench.data.device_aug import base_transform
from ssl_bench.data.identity import check_same_data, run_data
from ssl_bench.data.loader import run_loader
from ssl_bench.data.multicrop import MultiCropTransform, crop_policy
from ssl_bench.engine import provenance
from ssl_bench.engine.checkpoint import apply_checkpoint, read_checkpoint, save_checkpoint, set_rng_state
from ssl_bench.engine.evaluation import evaluate, evaluate_baseline, evaluate_run  # noqa: F401 (public here too)
from ssl_bench.engine.guards import DivergenceGuard
from ssl_bench.engine.optim import make_optimizer
from ssl_bench.engine.pause import pause_point, wait_at
from ssl_bench.engine.preflight import preflight
from ssl_bench.engine.setup import (  # noqa: F401
    RunResult,
    build_method,
    compile_backbones,
    pick_device,
    prepare_distributed,
    prepare_process,
    resolve,
    seed_everything,
)
from ssl_bench.engine.step import device_augmenter, device_normalizer, ema_update, make_train_step  # noqa: F401
from ssl_bench.engine.tracking import Tracker
from ssl_bench.errors import UserError
from ssl_bench.methods.base import Method
from ssl_bench.results import RunDir, flatten, fresh_run_dir

log = logging.getLogger(__name__)


def _open_run_dir(cfg: RunConfig) -> tuple[RunDir, bool]:
    """Return the run folder and whether this call created it."""
    run = RunDir(fresh_run_dir(cfg).run_dir)
    return run, run.create(resume=cfg.resume == "auto")


class Trainer:
    """Runs one configured training run end to end (train, checkpoint, evaluate, write results)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = prepare_process(cfg)
        self.device = pick_device(self.cfg.device)

    # -- data ------------------------------------------------------------------------------------
    def training_batches(self, splits: DataSplits, epoch: int, start_batch: int = 0, end_epoch: int | None = None):
        """The training batches of ``epoch`` (from ``start_batch``) through ``end_epoch - 1`` (default:
        that one epoch) from one DataLoader, so its workers start once."""
        cfg = self.cfg
        if cfg.data.augment == "device":
            transform = base_transform(cfg.data.device_load_size or cfg.data.global_size or cfg.backbone.img_size)
        else:
            transform = MultiCropTransform(
                crop_policy(cfg.data), splits.mean, splits.std, normalize=not cfg.data.normalize_on_device
            )
        return run_loader(
            splits.train,
            transform,
            cfg.optim.batch_size,
            cfg.seed,
            epoch,
            epoch + 1 if end_epoch is None else end_epoch,
            D.rank(),
            D.world_size(),
            start_batch,
            cfg.data.num_workers,
            self.device.type == "cuda",
        )

    # -- main entry --------------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        splits = run_datasets(cfg)
        global_batch = cfg.optim.batch_size
        if global_batch % D.world_size():
            raise UserError(f"optim.batch_size={global_batch} must be divisible by the {D.world_size()} processes")
        steps_per_epoch = len(splits.train) // global_batch
        if steps_per_epoch == 0:
            raise UserError(f"optim.batch_size={global_batch} is larger than the {len(splits.train)} training images")
        if D.is_main():
            preflight(cfg, splits)
        method = prepare_distributed(build_method(cfg), self.device).to(self.device)
        if D.is_dist() and not cfg.run_dir:
            raise UserError("a distributed run needs run_dir set before the processes start (the launchers do this)")
        run, created = _open_run_dir(cfg) if D.is_main() else (RunDir(str(cfg.run_dir)), False)
        try:
            with run.lock() if D.is_main() else contextlib.nullcontext():
                return self._train(run, method, splits, steps_per_epoch)
        except BaseException:
            if created and not run.has_checkpoint():
                shutil.rmtree(run.path, ignore_errors=True)  # no partial run left behind
            raise

    def _train(self, run: RunDir, method: Method, splits: DataSplits, spe: int) -> RunResult:
        cfg, dev = self.cfg, self.device
        opt = make_optimizer(cfg.optim, method)
        start_epoch, step, start_batch, partial, scaler_state = 0, 0, 0, {}, None
        resolved = yaml.safe_load(to_yaml(cfg))
        settings = flatten(resolved)
        if run.has_checkpoint() and cfg.resume == "auto":
            # the checkpoint's own settings decide (config.yaml may be gone or edited); before loading its weights
            ckpt = read_checkpoint(run.checkpoint)
            recorded = ckpt["extra"].get("settings")
            if recorded is not None or (run.path / "config.yaml").is_file():
                run.check_resume(resolved, recorded)
            apply_checkpoint(ckpt, run.checkpoint, method, opt)
            start_epoch, step = ckpt["epoch"], ckpt["step"]
            start_batch = step - start_epoch * spe  # > 0 when the checkpoint was taken mid-epoch
            partial = ckpt["extra"].get("partial", {})
            scaler_state = ckpt["extra"].get("scaler")
            set_rng_state(ckpt["rng"])
            log.info("resumed %s at epoch %d, step %d", run.path, start_epoch + 1, step)
        if D.is_main():
            data = run_data(cfg)
            if start_epoch or step:
                check_same_data(run, data)
            run.write_config(to_yaml(cfg))
            normalize = {"mean": [float(v) for v in splits.mean], "std": [float(v) for v in splits.std]}
            provenance.record(run.path, dev, data, normalize)
        train_step = make_train_step(cfg, method, opt, spe, dev, (splits.mean, splits.std))
        scaler = train_step.scaler
        if scaler_state:
            scaler.load_state_dict(scaler_state)
        extra = lambda **kw: {  # noqa: E731
            **kw,
            "settings": settings,  # what resume=auto compares against
            **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
        }
        tracker = Tracker(
            run.path,
            cfg.log.tensorboard and D.is_main(),
            cfg.log.every_steps,
            wandb=cfg.log.wandb and D.is_main(),
            config=settings,
            project=cfg.log.wandb_project,
            offline=cfg.log.wandb_offline,
        )
        try:
            return self._loop(
                run, method, splits, spe, opt, train_step, extra, tracker, start_epoch, step, start_batch, partial
            )
        finally:
            tracker.close()

    def _loop(
        self, run, method, splits, spe, opt, train_step, extra, tracker, start_epoch, step, start_batch, partial
    ) -> RunResult:
        cfg, dev = self.cfg, self.device
        method.train()
        t_start = time.perf_counter()
        last: dict[str, float] = {}
        batches = iter(self.training_batches(splits, start_epoch, start_batch, cfg.optim.epochs))
        pause = pause_point()
        guard = DivergenceGuard(
            [p for p in method.parameters() if p.requires_grad],
            cfg.optim.max_param_norm,
            dev,
            run.checkpoint,
            cfg.precision != "fp32",
        )
        if run.has_checkpoint() and step:
            guard.saved(start_epoch, step)
        for epoch in range(start_epoch, cfg.optim.epochs):
            skip = start_batch if epoch == start_epoch else 0
            loader = itertools.islice(batches, spe - skip)
            sums = {k: torch.tensor(v, device=dev) for k, v in partial.items()} if skip else {}
            n = skip
            t0 = time.perf_counter()
            bar = tqdm(
                loader,
                total=spe,
                initial=skip,
                desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                leave=False,
                disable=not (cfg.progress and D.is_main()),
                mininterval=2.0,
            )
            for views, _ in bar:
                out, values, cur_lr, cur_wd = train_step(views, step, epoch)
                for k, v in out.items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v.clone()
                n += 1
                step += 1
                tracker.step(step, out, cur_lr, cur_wd, values)
                guard.check(out["loss"], step, epoch)
                every = cfg.checkpoint_every_steps
                if every and step % every == 0 and n < spe and D.is_main():
                    partial_sums = {k: float(v) for k, v in sums.items()}
                    save_checkpoint(run.checkpoint, method, opt, epoch, step, extra(partial=partial_sums))
                    guard.saved(epoch, step)
                wait_at(pause, step)
            guard.check(out["loss"], step, epoch, end_of_epoch=True)
            means = {k: D.all_reduce_mean(v / max(n, 1)).item() for k, v in sums.items()}
            dt = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1,
                "step": step,
                "lr": cur_lr,
                "wd": cur_wd,
                **means,
                **{k: v for k, v in values.items()},
                "epoch_time_s": dt,
                "images_per_s": (n - skip) * cfg.optim.batch_size / dt,
            }
            if cfg.eval.knn_every and (epoch + 1) % cfg.eval.knn_every == 0 and epoch + 1 < cfg.optim.epochs:
                record.update(
                    {f"knn_{r['metric']}": r["value"] for r in self.evaluate(method.encoder(), splits, ["knn"])}
                )
            last = means
            tracker.epoch(record)
            log.info(
                "epoch %d/%d  %s",
                epoch + 1,
                cfg.optim.epochs,
                "  ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("epoch", "step")),
            )
            if D.is_main():
                run.append_train_log(record)
                save_checkpoint(run.checkpoint, method, opt, epoch + 1, step, extra())
                guard.saved(epoch + 1, step)
        if not last:  # resumed a finished run: take the diagnostics from its log
            log_rows = run.read_train_log()
            last = {k: v for k, v in (log_rows[-1] if log_rows else {}).items() if isinstance(v, float)}
        wall = time.perf_counter() - t_start
        if not D.is_main():  # rank 0 alone evaluates and writes results
            return RunResult(run, [])
        speeds = [r["images_per_s"] for r in run.read_train_log() if "images_per_s" in r]
        rows = [
            {"eval": "train", "metric": "final_loss", "value": last.get("loss", float("nan"))},
            {"eval": "train", "metric": "wall_time_s", "value": wall},
            {"eval": "train", "metric": "images_per_s", "value": sum(speeds) / max(len(speeds), 1)},
        ]
        collapsed = method.collapsed(last)
        if collapsed is not None:
            rows.append({"eval": "train", "metric": "collapsed", "value": float(collapsed)})
        run.write_metrics(rows)  # then after each evaluation, so a later failure loses none of them
        rows += self.evaluate(method.encoder(), splits, cfg.eval.evals, write=run.write_metrics)
        if cfg.eval.baseline and cfg.eval.evals:
            rows += self.evaluate_baseline(splits, cfg.eval.evals, write=run.write_metrics)
        tracker.finish(rows)
        return RunResult(run, rows)

    def evaluate(self, encoder: nn.Module, splits: DataSplits, names: list[str], write=None) -> list[dict]:
        return evaluate(self.cfg, self.device, encoder, splits, names, write)

    def evaluate_baseline(self, splits: DataSplits, names: list[str], write=None) -> list[dict]:
        return evaluate_baseline(self.cfg, self.device, splits, names, write)


def train(cfg: RunConfig) -> RunResult:
    """Train and evaluate one run described by ``cfg``."""
    return Trainer(cfg).run()
