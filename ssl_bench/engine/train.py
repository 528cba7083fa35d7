"""The training loop shared by every method."""
from __future__ import annotations

import contextlib
import itertools
import logging
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from ssl_bench.config import RunConfig, to_yaml
from ssl_bench.data.datasets import DataSplits, run_datasets
from ssl_bench.data.loader import mix_seeds, run_loader
from ssl_bench.data.multicrop import MultiCropTransform, ViewSpec, crop_policy
from ssl_bench.engine import baselines
from ssl_bench import dist as D
from ssl_bench import schedules as S
from ssl_bench.engine.allocator import keep_freed_memory
from ssl_bench.engine.optim import clip_gradients, make_optimizer, peak_lr
from ssl_bench.engine import provenance
from ssl_bench.engine.guards import DivergenceGuard
from ssl_bench.engine.tracking import Tracker
from ssl_bench.engine.pause import pause_point, wait_at
from ssl_bench.engine.preflight import preflight
from ssl_bench.engine.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from ssl_bench.errors import UserError
from ssl_bench.methods.base import Method, StepState
from ssl_bench.registry import EVALS, METHODS
from ssl_bench.results import RunDir, new_run_id

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: RunDir
    metrics: list[dict]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available; valid here: auto, cpu")
    return torch.device(name)


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill the config's derived values (crop sizes, method's local-crop count) so the saved config is complete."""
    data = cfg.data
    gsize = data.global_size or cfg.backbone.img_size
    n_local = data.n_local if data.n_local is not None else getattr(cfg.method, "n_local", 0)
    data = replace(data, global_size=gsize, local_size=data.local_size or max(gsize // 2, 1), n_local=n_local)
    return replace(cfg, data=data)


def build_method(cfg: RunConfig) -> Method:
    """Seed, then build the method: the same seed always gives the same initial weights."""
    seed_everything(cfg.seed)
    method = METHODS.get(cfg.method.name).obj(cfg.method, cfg.backbone)
    method.configure_views(ViewSpec(cfg.data.n_global, cfg.data.n_local))
    return method


def prepare_distributed(method: Method, device: torch.device) -> Method:
    """Global-batch BatchNorm when running on several processes (no-op otherwise)."""
    return D.convert_sync_batchnorm(method, device) if D.is_dist() and method.sync_batchnorm() else method


@torch.no_grad()
def ema_update(pairs: list[tuple[list[torch.Tensor], list[torch.Tensor]]], momentum: float) -> None:
    """target <- m * target + (1 - m) * online, one fused foreach call per pair."""
    for online, target in pairs:
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, online, alpha=1.0 - momentum)


def compile_backbones(method: nn.Module) -> int:
    """``torch.compile`` every backbone of ``method`` in place (``Module.compile``: parameters and
    state-dict keys unchanged, so checkpoints load either way). Returns how many were compiled."""
    from ssl_bench.backbones import Backbone

    found = [m for m in method.modules() if isinstance(m, Backbone)]
    for m in found:
        m.compile()
    return len(found)


def device_normalizer(mean, std, dev: torch.device):
    """uint8 (B, C, H, W) crops -> normalised float on ``dev`` (``data.normalize_on_device``): the
    evaluation path's :func:`~ssl_bench.data.datasets.normalize_batch`, the loader's per-crop arithmetic."""
    from ssl_bench.data.datasets import normalize_batch

    m, s = (torch.tensor(t, dtype=torch.float32, device=dev) for t in (mean, std))  # once, not per step
    return lambda v: normalize_batch(v.to(dev), m, s)


def device_augmenter(cfg: RunConfig, mean_std: tuple | None, dev: torch.device):
    """The batched on-device multi-crop of ``data.augment=device`` (same policy as the loader's)."""
    from ssl_bench.data.device_aug import DeviceMultiCrop

    if mean_std is None:
        raise ValueError("data.augment=device needs make_train_step(..., mean_std=(mean, std))")
    return DeviceMultiCrop(crop_policy(cfg.data), *mean_std).to(dev)


def make_train_step(cfg: RunConfig, method: Method, opt: torch.optim.Optimizer, spe: int, dev: torch.device,
                    mean_std: tuple | None = None):
    """The engine's one optimisation step as a function of (views, step, epoch): schedules, forward
    under autocast, backward, method hooks, gradient all-reduce, clipping, AdamW, EMA. ``_train`` and
    ``benchmarks/throughput.py`` both call it, so the benchmark times exactly the engine's step.
    uint8 views (``data.normalize_on_device``) are normalised on ``dev`` with ``mean_std``; with
    ``data.augment=device`` the views arrive as one uint8 image batch and every crop is drawn here."""
    total = spe * cfg.optim.epochs
    lr = peak_lr(cfg.optim)
    lr_s = S.warmup_cosine(lr, cfg.optim.min_lr, cfg.optim.warmup_epochs)
    wd_s = S.cosine(cfg.optim.weight_decay, cfg.optim.weight_decay_end)
    scheds = method.schedules()
    params = [p for p in method.parameters() if p.requires_grad]
    pairs = [(list(o.parameters()), list(t.parameters())) for o, t in method.ema_pairs()]
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    # fp16 overflows where bf16 does not: scale the loss, skip steps with inf/NaN gradients (DINO's fp16_scaler)
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.precision == "fp16")
    norm = device_normalizer(*mean_std, dev) if mean_std is not None else None
    if cfg.compile:
        compile_backbones(method)
    aug = device_augmenter(cfg, mean_std, dev) if cfg.data.augment == "device" else None
    rank = D.rank()

    def train_step(views, step: int, epoch: int):
        if isinstance(views, torch.Tensor):  # data.augment=device: one uint8 image batch
            if aug is None:
                raise ValueError("an image batch (not a list of crops) needs data.augment=device and mean_std")
            views = aug(views.to(dev, non_blocking=True), mix_seeds(cfg.seed, step, rank, 11))
        views = [v.to(dev, non_blocking=True) for v in views]
        if views[0].dtype == torch.uint8:
            if norm is None:
                raise ValueError("uint8 crops need make_train_step(..., mean_std=(mean, std))")
            views = [norm(v) for v in views]
        values = {name: f(step, spe, total) for name, f in scheds.items()}
        state = StepState(step, epoch, spe, total, values)
        cur_lr, cur_wd = lr_s(step, spe, total), wd_s(step, spe, total)
        for g in opt.param_groups:
            g["lr"] = cur_lr * g.get("lr_mult", 1.0)
            if g["regularize"]:
                g["weight_decay"] = cur_wd
        with torch.autocast(dev.type, dtype=half or torch.bfloat16, enabled=half is not None):
            out = method.training_step(views, state)
        opt.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        method.after_backward(state)
        D.all_reduce_grads(params)
        if cfg.optim.clip_grad > 0:
            scaler.unscale_(opt)
            clip_gradients(params, cfg.optim.clip_grad, cfg.optim.clip_mode)
        scaler.step(opt)
        scaler.update()
        if pairs:
            ema_update(pairs, values["momentum"])
        method.after_step(state)
        return out, values, cur_lr, cur_wd

    train_step.scaler = scaler  # its state goes into checkpoints (fp16)
    return train_step


def _open_run_dir(cfg: RunConfig) -> tuple[RunDir, bool]:
    """Return the run folder and whether this call created it."""
    if cfg.run_dir:
        run = RunDir(cfg.run_dir)
        if run.path.exists() and any(run.path.iterdir()):
            if cfg.resume == "auto":
                return run, False
            raise UserError(f"run_dir {cfg.run_dir!r} already holds a run; pass resume=auto to continue it or pick a new run_dir")
    else:
        rid = new_run_id(cfg.method.name, cfg.backbone.name, cfg.dataset, cfg.seed)
        run = RunDir(Path(cfg.results_root) / rid)
    created = not run.path.exists()
    run.path.mkdir(parents=True, exist_ok=True)
    return run, created


class Trainer:
    """Runs one configured training run end to end (train, checkpoint, evaluate, write results)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = resolve(cfg)
        self.device = pick_device(self.cfg.device)
        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if self.cfg.keep_cpu_memory:
            keep_freed_memory()

    # -- data ------------------------------------------------------------------------------------
    def training_batches(self, splits: DataSplits, epoch: int, start_batch: int = 0, end_epoch: int | None = None):
        """The training batches of ``epoch`` (from ``start_batch``) through ``end_epoch - 1`` (default:
        that one epoch) from one DataLoader, so its workers start once."""
        cfg = self.cfg
        if cfg.data.augment == "device":
            from ssl_bench.data.device_aug import base_transform

            transform = base_transform(cfg.data.device_load_size or cfg.data.global_size)
        else:
            transform = MultiCropTransform(crop_policy(cfg.data), splits.mean, splits.std,
                                           normalize=not cfg.data.normalize_on_device)
        return run_loader(splits.train, transform, cfg.optim.batch_size, cfg.seed, epoch,
                          epoch + 1 if end_epoch is None else end_epoch, D.rank(), D.world_size(), start_batch,
                          cfg.data.num_workers, self.device.type == "cuda")

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
        run, created = _open_run_dir(cfg) if D.is_main() else (RunDir(cfg.run_dir), False)
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
        if run.has_checkpoint() and cfg.resume == "auto":
            if (run.path / "config.yaml").is_file():
                run.check_resume(yaml.safe_load(to_yaml(cfg)))
            ckpt = load_checkpoint(run.checkpoint, method, opt)
            start_epoch, step = ckpt["epoch"], ckpt["step"]
            start_batch = step - start_epoch * spe  # > 0 when the checkpoint was taken mid-epoch
            partial = ckpt["extra"].get("partial", {})
            scaler_state = ckpt["extra"].get("scaler")
            set_rng_state(ckpt["rng"])
            log.info("resumed %s at epoch %d, step %d", run.path, start_epoch + 1, step)
        if D.is_main():
            run.write_config(to_yaml(cfg))
            provenance.record(run.path, dev)
        train_step = make_train_step(cfg, method, opt, spe, dev, (splits.mean, splits.std))
        scaler = train_step.scaler
        if scaler_state:
            scaler.load_state_dict(scaler_state)
        extra = lambda **kw: {**kw, **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})}  # noqa: E731
        tracker = Tracker(run.path, cfg.log.tensorboard and D.is_main(), cfg.log.every_steps)
        try:
            return self._loop(run, method, splits, spe, opt, train_step, extra, tracker, start_epoch, step, start_batch,
                              partial)
        finally:
            tracker.close()

    def _loop(self, run, method, splits, spe, opt, train_step, extra, tracker, start_epoch, step, start_batch,
              partial) -> RunResult:
        cfg, dev = self.cfg, self.device
        method.train()
        t_start = time.perf_counter()
        last: dict[str, float] = {}
        batches = iter(self.training_batches(splits, start_epoch, start_batch, cfg.optim.epochs))
        pause = pause_point()
        guard = DivergenceGuard([p for p in method.parameters() if p.requires_grad], cfg.optim.max_param_norm, dev,
                                run.checkpoint, cfg.precision != "fp32")
        if run.has_checkpoint() and step:
            guard.saved(start_epoch, step)
        for epoch in range(start_epoch, cfg.optim.epochs):
            skip = start_batch if epoch == start_epoch else 0
            loader = itertools.islice(batches, spe - skip)
            sums = {k: torch.tensor(v, device=dev) for k, v in partial.items()} if skip else {}
            n = skip
            t0 = time.perf_counter()
            bar = tqdm(loader, total=spe, initial=skip, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", leave=False,
                       disable=not (cfg.progress and D.is_main()), mininterval=2.0)
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
            record = {"epoch": epoch + 1, "step": step, "lr": cur_lr, "wd": cur_wd, **means,
                      **{k: v for k, v in values.items()}, "epoch_time_s": dt,
                      "images_per_s": (n - skip) * cfg.optim.batch_size / dt}
            if cfg.eval.knn_every and (epoch + 1) % cfg.eval.knn_every == 0 and epoch + 1 < cfg.optim.epochs:
                record.update({f"knn_{r['metric']}": r["value"] for r in self.evaluate(method.encoder(), splits, ["knn"])})
            last = means
            tracker.epoch(record)
            log.info("epoch %d/%d  %s", epoch + 1, cfg.optim.epochs,
                     "  ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("epoch", "step")))
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
        rows = [{"eval": "train", "metric": "final_loss", "value": last.get("loss", float("nan"))},
                {"eval": "train", "metric": "wall_time_s", "value": wall},
                {"eval": "train", "metric": "images_per_s", "value": sum(speeds) / max(len(speeds), 1)}]
        collapsed = method.collapsed(last)
        if collapsed is not None:
            rows.append({"eval": "train", "metric": "collapsed", "value": float(collapsed)})
        run.write_metrics(rows)  # then after each evaluation, so a later failure loses none of them
        rows += self.evaluate(method.encoder(), splits, cfg.eval.evals, write=run.write_metrics)
        if cfg.eval.baseline and cfg.eval.evals:
            rows += self.evaluate_baseline(splits, cfg.eval.evals, write=run.write_metrics)
        return RunResult(run, rows)

    def evaluate(self, encoder: nn.Module, splits: DataSplits, names: list[str], write=None) -> list[dict]:
        """The rows of each named evaluation (one feature cache for all); ``write`` gets each eval's rows
        as soon as they exist."""
        from ssl_bench.evals.features import EvalContext

        ctx = EvalContext(self.cfg, splits, self.device, cache={})
        rows: list[dict] = []
        for name in names:
            new = EVALS.get(name).obj(encoder, ctx)
            if write is not None:
                write(new)
            rows += new
        return rows

    def evaluate_baseline(self, splits: DataSplits, names: list[str], write=None) -> list[dict]:
        """The ``@init`` rows: the same evaluations of the run's backbone at random initialisation,
        computed once per process for the same initial weights and evaluation settings (``baselines``)."""
        encoder = build_method(self.cfg).to(self.device).encoder()
        rename = lambda rows: [{**r, "eval": f"{r['eval']}@init"} for r in rows]  # noqa: E731
        each = (lambda rows: write(rename(rows))) if write is not None else None
        computed = []

        def compute() -> list[dict]:
            computed.append(True)
            return rename(self.evaluate(encoder, splits, names, write=each))

        rows = baselines.get_or_compute(baselines.key(encoder, self.cfg, names, self.device), compute)
        if write is not None and not computed:
            write(rows)  # taken from the cache: not written yet
        return rows


def evaluate_run(run_dir: str | Path, overrides: list[str]) -> RunResult:
    """Evaluate a finished run (its checkpoint) with the evals named in ``overrides``
    (``evals=knn,linear,seg`` plus any ``eval.*`` key); rows are merged into its metrics.json."""
    from ssl_bench.config import load_config
    from omegaconf import OmegaConf

    run = RunDir(run_dir)
    if not (run.path / "config.yaml").is_file() or not run.has_checkpoint():
        raise UserError(f"run={str(run_dir)!r} is not a run folder with config.yaml and checkpoint.pt")
    saved = load_config(run.path / "config.yaml")
    over = [o if not o.startswith("evals=") else f"eval.evals=[{o.split('=', 1)[1]}]" for o in overrides]
    bad = [o for o in over if not o.startswith(("eval.", "device=", "data.root=", "data.num_workers=", "threads="))]
    if bad:
        raise UserError(f"eval accepts evals=..., eval.*, data.root, device, threads; got {bad[0]!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(saved), OmegaConf.from_dotlist(over))
        cfg = OmegaConf.to_object(merged)
    except Exception as err:  # OmegaConf errors name the key
        raise UserError(f"bad eval override: {str(err).splitlines()[0]}") from None
    for name in cfg.eval.evals:
        EVALS.get(name)
    trainer = Trainer(replace(cfg, run_dir=str(run.path)))
    splits = run_datasets(cfg)
    method = build_method(trainer.cfg).to(trainer.device)
    load_checkpoint(run.checkpoint, method, None)
    rows = trainer.evaluate(method.encoder(), splits, cfg.eval.evals)
    if cfg.eval.baseline:
        rows += trainer.evaluate_baseline(splits, cfg.eval.evals)
    run.write_metrics(rows)
    return RunResult(run, rows)


def train(cfg: RunConfig) -> RunResult:
    """Train and evaluate one run described by ``cfg``."""
    return Trainer(cfg).run()
