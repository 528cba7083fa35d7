"""Evaluations of an encoder (one feature cache for all), of the same backbone at random initialisation,
and of a finished run's checkpoint (``python -m ssl_bench eval run=...``)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from ssl_bench.config import RunConfig, load_config, to_run_config
from ssl_bench.data.datasets import DataSplits, run_datasets
from ssl_bench.data.identity import evaluated_on
from ssl_bench.engine import baselines
from ssl_bench.engine.checkpoint import load_checkpoint
from ssl_bench.engine.setup import RunResult, build_method, pick_device, prepare_process
from ssl_bench.errors import UserError
from ssl_bench.evals.features import EvalContext
from ssl_bench.overrides import expand_shorthand
from ssl_bench.registry import EVALS
from ssl_bench.results import RunDir


def evaluate(
    cfg: RunConfig, device: torch.device, encoder: nn.Module, splits: DataSplits, names: list[str], write=None
) -> list[dict]:
    """The rows of each named evaluation (one feature cache for all); ``write`` gets each eval's rows
    as soon as they exist. Each row carries the evaluation settings and the data it was computed with
    (``settings``, ``on``), so a later evaluation with others adds rows instead of replacing these."""

    ctx = EvalContext(cfg, splits, device, cache={})
    stamp = {"settings": asdict(cfg.eval), "on": evaluated_on(cfg)}
    rows: list[dict] = []
    for name in names:
        new = [{**r, **stamp} for r in EVALS.get(name).obj(encoder, ctx)]
        if write is not None:
            write(new)
        rows += new
    return rows


def evaluate_baseline(
    cfg: RunConfig, device: torch.device, splits: DataSplits, names: list[str], write=None
) -> list[dict]:
    """The ``@init`` rows: the same evaluations of the run's backbone at random initialisation,
    computed once per process for the same initial weights and evaluation settings (``baselines``)."""
    encoder = build_method(cfg).to(device).encoder()
    rename = lambda rows: [{**r, "eval": f"{r['eval']}@init"} for r in rows]  # noqa: E731
    each = (lambda rows: write(rename(rows))) if write is not None else None
    computed = []

    def compute() -> list[dict]:
        computed.append(True)
        return rename(evaluate(cfg, device, encoder, splits, names, write=each))

    rows = baselines.get_or_compute(baselines.key(encoder, cfg, names, device), compute)
    if write is not None and not computed:
        write(rows)  # taken from the cache: not written yet
    return rows


def evaluate_run(run_dir: str | Path, overrides: list[str]) -> RunResult:
    """Evaluate a finished run (its checkpoint) with the evals named in ``overrides``
    (``evals=knn,linear,seg`` plus any ``eval.*`` key); rows are merged into its metrics.json."""
    from omegaconf import OmegaConf

    run = RunDir(run_dir)
    if not (run.path / "config.yaml").is_file() or not run.has_checkpoint():
        raise UserError(f"run={str(run_dir)!r} is not a run folder with config.yaml and checkpoint.pt")
    saved = load_config(run.path / "config.yaml")
    over = [expand_shorthand(o) for o in overrides]
    bad = [o for o in over if not o.startswith(("eval.", "device=", "data.root=", "data.num_workers=", "threads="))]
    if bad:
        raise UserError(f"eval accepts evals=..., eval.*, data.root, device, threads; got {bad[0]!r}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(saved), OmegaConf.from_dotlist(over))
        cfg = to_run_config(merged)
    except Exception as err:  # OmegaConf errors name the key
        raise UserError(f"bad eval override: {str(err).splitlines()[0]}") from None
    for name in cfg.eval.evals:
        EVALS.get(name)
    with run.lock():  # a run still training holds its folder: refused with one line naming the holder
        done = len(run.read_train_log())
        if done < saved.optim.epochs:
            raise UserError(
                f"run={str(run_dir)!r} stopped after epoch {done} of {saved.optim.epochs}: its checkpoint is not "
                f"the trained model; finish it first with run run_dir={str(run_dir)} resume=auto"
            )
        cfg = prepare_process(replace(cfg, run_dir=str(run.path)))
        device = pick_device(cfg.device)
        splits = run_datasets(cfg)
        method = build_method(cfg).to(device)
        load_checkpoint(run.checkpoint, method, None)
        rows = evaluate(cfg, device, method.encoder(), splits, cfg.eval.evals)
        if cfg.eval.baseline:
            rows += evaluate_baseline(cfg, device, splits, cfg.eval.evals)
        run.write_metrics(rows)
    return RunResult(run, rows)
