"""Backbones in and out of the suite.

``export run=RUN [format=timm|torchvision] out=FILE``: the run's evaluation encoder (DINO: the teacher, as
DINO releases it; BYOL/MoCo: the online/query backbone) as a plain state dict (``FILE``, loads with
``torch.load(weights_only=True)``), the same tensors as ``.safetensors``, and a ``.json`` beside them with the
``timm.create_model`` (or torchvision) arguments that rebuild the model.

``eval weights=FILE [backbone=...] evals=knn,linear,seg``: scores any such file, or a released checkpoint
of DINO, MoCo v2/v3, SwAV, solo-learn, timm or torchvision (:mod:`ssl_bench.engine.released`), with the
suite's protocol, next to the same backbone at random initialisation, in a run folder that ``report`` reads
like any other.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_bench.atomic import save_torch, write_atomic, write_json
from ssl_bench.backbones import Backbone
from ssl_bench.config import build_config, load_config, to_yaml
from ssl_bench.data.datasets import run_datasets
from ssl_bench.engine.checkpoint import load_checkpoint
from ssl_bench.engine.evaluation import evaluate, evaluate_baseline
from ssl_bench.engine.released import TIMM_SCHEMES, backbone_state, from_timm, load_file, tensors
from ssl_bench.engine.setup import RunResult, build_method, pick_device, prepare_process
from ssl_bench.errors import UserError
from ssl_bench.registry import EVALS
from ssl_bench.results import WEIGHTS_SOURCE, RunDir, new_run_id

log = logging.getLogger(__name__)

FORMATS = ("timm", "torchvision")
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "timm") -> list[Path]:
    """Write the run's evaluation encoder as FILE (state dict), FILE.safetensors and FILE.json."""
    from safetensors.torch import save as safetensors_bytes

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    out = _export_target(out)
    run = RunDir(run_dir)
    if not (run.path / "config.yaml").is_file() or not run.has_checkpoint():
        raise UserError(f"run={str(run_dir)!r} is not a run folder with config.yaml and checkpoint.pt")
    cfg = load_config(run.path / "config.yaml")
    method = build_method(cfg)
    load_checkpoint(run.checkpoint, method, None)
    enc = method.encoder()
    if fmt == "torchvision" and enc.arch not in TORCHVISION_ARCHS:
        raise UserError(
            f"format=torchvision holds ResNets ({', '.join(TORCHVISION_ARCHS)}); {cfg.backbone.name} "
            "exports with format=timm"
        )
    # timm's ResNets use torchvision's parameter names, so one state dict serves both
    state = {k: v.detach().contiguous().clone() for k, v in enc.model.state_dict().items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(
            f"run={str(run_dir)!r}: the encoder's weights hold NaN or inf in {len(bad)} tensors (e.g. {bad[0]}); "
            "the run diverged, refusing to export them"
        )
    meta = {
        "format": fmt,
        "arch": enc.arch,
        "cifar_stem": bool(enc.cifar_stem),
        "stem_padding": int(getattr(enc, "stem_padding", 1)),
        "embed_dim": enc.embed_dim,
        "run": run.run_id,
        "method": cfg.method.name,
        "preset": cfg.preset,
        "dataset": cfg.dataset,
        "epochs": cfg.optim.epochs,
        # what the weights were trained with and scored, so `eval weights=` can show them as the run's row
        "config": run.read_config(),
        "trained_on": run.trained_on(),
        "provenance": {k: (run.provenance() or [{}])[0].get(k) for k in ("git", "packages", "started")},
        "metrics": [{k: r.get(k) for k in ("eval", "metric", "value")} for r in run.read_metrics()],
        "encoder": f"{type(method).__name__}.encoder()",
        "ssl_bench_backbone": asdict(cfg.backbone),
    }
    if fmt == "timm":
        meta["timm_create_model"] = {"model_name": enc.timm_name, "pretrained": False, **enc.create_kwargs}
        if enc.cifar_stem:  # resnet*_cifar: timm's ResNet with the 3x3/1 stem, registered by importing
            meta["timm_import"] = "ssl_bench.timm_models"
        # timm's preprocessing config of these weights (timm.data.resolve_model_data_config reads it): the
        # run's input size, normalisation and test-time resize; pass it with pretrained=True and the file
        meta["timm_pretrained_cfg_overlay"] = pretrained_cfg(cfg, run, out.with_suffix(".safetensors").name)
    else:
        then = "model.fc = torch.nn.Identity()"
        if enc.cifar_stem:  # torchvision has no model registry to name the CIFAR stem in
            then += (
                f"; model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, {meta['stem_padding']}, bias=False); "
                "model.maxpool = torch.nn.Identity()"
            )
        meta["torchvision"] = {"model": f"torchvision.models.{enc.arch}", "weights": None, "then": then}
    paths = [out, out.with_suffix(".safetensors"), out.with_suffix(".json")]
    existed = {p for p in paths if p.exists()}
    try:
        save_torch(paths[0], state)
        write_atomic(paths[1], lambda f: f.write(safetensors_bytes(state)), mode="wb")
        write_json(paths[2], meta)
    except OSError as err:
        for p in paths:  # nothing half-written: remove what this call wrote
            if p not in existed and p.is_file():
                p.unlink()
        raise UserError(f"out={str(out)!r}: cannot write the export ({err.strerror or err})") from None
    return paths


def _export_target(out: str | Path) -> Path:
    """The state-dict file of an export: not the .safetensors or .json written beside it, not a folder, in
    a folder that exists."""
    if not str(out).strip():
        raise UserError("out= is empty: name the state-dict file to write, e.g. out=encoder.pt")
    out = Path(out).expanduser()
    if out.suffix in (".safetensors", ".json"):
        raise UserError(
            f"out={str(out)!r}: name the state-dict file (e.g. encoder.pt); the .safetensors and .json are "
            "written beside it"
        )
    if out.is_dir():
        raise UserError(f"out={str(out)!r} is a folder: name the state-dict file in it, e.g. {out / 'encoder.pt'}")
    if not out.parent.is_dir():
        what = "is a file" if out.parent.exists() else "does not exist"
        raise UserError(f"out={str(out)!r}: its folder {str(out.parent)!r} {what}")
    return out


def pretrained_cfg(cfg, run: RunDir, file: str) -> dict:
    """timm's ``pretrained_cfg`` of an exported run: ``file`` (the .safetensors beside the export), the input
    size it was trained at, the mean / std it normalised with (None for runs from before they were recorded)
    and the evaluations' resize (``eval.crop_fraction``, ``eval.interpolation``)."""
    norm = next((p.get("normalize") for p in run.provenance() if p.get("normalize")), None) or {}
    size = cfg.data.global_size or cfg.backbone.img_size
    out = {
        "file": file,
        "num_classes": 0,
        "input_size": [3, size, size],
        "mean": norm.get("mean"),
        "std": norm.get("std"),
        "crop_pct": cfg.eval.crop_fraction,
        "interpolation": cfg.eval.interpolation,
    }
    return {k: v for k, v in out.items() if v is not None}


def build_exported(path: str | Path) -> nn.Module:
    """A fresh timm / torchvision model, built from the ``.json`` beside an exported file and loaded with
    ``weights_only=True``: what a user of the exported weights does, and what the tests check."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta["format"] == "timm":
        import importlib

        import timm

        if meta.get("timm_import"):
            importlib.import_module(meta["timm_import"])
        model = timm.create_model(**meta["timm_create_model"])
    else:
        import torchvision

        model = getattr(torchvision.models, meta["arch"])(weights=None)
        model.fc = nn.Identity()
        if meta.get("cifar_stem"):
            model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=int(meta["stem_padding"]), bias=False)
            model.maxpool = nn.Identity()
    model.load_state_dict(read_weights(path))
    return model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an exported file (``.safetensors`` or a tensors-only torch file, never unpickling
    objects): the model's own state dict."""
    state = tensors(load_file(path))
    if state is None:
        raise UserError(f"weights={str(path)!r} is not a state dict of tensors")
    return state


def load_into(encoder: Backbone, obj: Any, path: str) -> str:
    """Load the backbone tensors of ``obj`` (a loaded file, any layout of :mod:`released`) into the suite
    backbone's timm model; returns the layout's name."""
    own = encoder.model.state_dict()
    state, layout = backbone_state(obj, own, path, encoder.arch)
    if encoder.is_vit and "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        # timm's own checkpoint_filter_fn resamples a released ViT's position grid to the model's
        from timm.layers import resample_abs_pos_embed

        grid = own["pos_embed"].shape[1] - encoder.model.num_prefix_tokens
        side = int(round(grid**0.5))
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=(side, side), num_prefix_tokens=encoder.model.num_prefix_tokens
        )
        log.info("weights=%s: position embeddings resampled to a %dx%d grid", path, side, side)
    shape = [k for k in own if state[k].shape != own[k].shape]
    if shape:
        raise UserError(
            f"weights={path!r} ({layout}) do not fit backbone={encoder.arch}: {shape[0]} has shape "
            f"{tuple(state[shape[0]].shape)}, the backbone {tuple(own[shape[0]].shape)}; pass the backbone "
            "(and backbone.img_size / patch_size / cifar_stem) the weights were trained with"
        )
    encoder.model.load_state_dict(state)
    return layout


def export_meta(path: str | Path) -> dict:
    """The ``.json`` that ``export`` wrote beside the file ({} for other files, e.g. released checkpoints)."""
    meta_path = Path(path).with_suffix(".json")
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{str(meta_path)!r} beside weights= is not readable JSON ({err})") from None
    return meta if isinstance(meta, dict) else {}


def weights_overrides(path: str) -> list[str]:
    """The ``backbone=...`` overrides recorded by ``export`` beside the file (none for other files)."""
    bb = dict(export_meta(path).get("ssl_bench_backbone") or {})
    name = bb.pop("name", None)
    if not name:
        return []
    return [f"backbone={name}"] + [f"backbone.{k}={'null' if v is None else v}" for k, v in bb.items()]


def evaluate_weights(overrides: list[str]):
    """``eval weights=FILE ...``: score the file's backbone and the same backbone at random init."""

    path = next(o.split("=", 1)[1] for o in overrides if o.startswith("weights="))
    rest = [o for o in overrides if not o.startswith("weights=")]
    if path.startswith(TIMM_SCHEMES):
        obj, exported, meta = from_timm(path)
    else:
        obj, exported, meta = load_file(path), weights_overrides(path), export_meta(path)
    # the export's backbone first, the user's keys over it (backbone.img_size=64 changes one key, not all);
    # another backbone= than the export's starts from that backbone's defaults
    picked = [o for o in rest if o.startswith("backbone=")]
    if picked and exported and picked[-1] != exported[0]:
        exported = []
    over = exported + rest
    if not any(o.startswith("backbone=") for o in over):
        raise UserError(
            f"weights={path!r} has no export .json beside it: pass backbone=NAME (and its img_size, "
            "patch_size, ...) the weights were trained with"
        )
    cfg = build_config(over, training=False)
    cfg = replace(cfg, weights=path if path.startswith(TIMM_SCHEMES) else str(Path(path).resolve()))
    for name in cfg.eval.evals:
        EVALS.get(name)
    cfg = prepare_process(cfg)
    device = pick_device(cfg.device)
    encoder = build_method(cfg).encoder()
    layout = load_into(encoder, obj, path)
    log.info("weights=%s: read as %s", path, layout)
    splits = run_datasets(cfg)
    hub = path.startswith(TIMM_SCHEMES)
    stem = Path(path.split(":", 1)[-1]).name.replace(".", "-") if hub else Path(path).stem
    run = RunDir(Path(cfg.results_root) / new_run_id(f"weights-{stem}", cfg.backbone.name, cfg.dataset, cfg.seed))
    run.path.mkdir(parents=True)
    try:
        with run.lock():
            run.write_config(to_yaml(cfg))
            write_json(run.path / WEIGHTS_SOURCE, {"file": path if hub else Path(path).name, "layout": layout, **meta})
            rows = evaluate(cfg, device, encoder.to(device), splits, cfg.eval.evals, write=run.write_metrics)
            if cfg.eval.baseline:
                rows += evaluate_baseline(cfg, device, splits, cfg.eval.evals, write=run.write_metrics)
    except BaseException:
        import shutil

        shutil.rmtree(run.path, ignore_errors=True)  # nothing half-written
        raise
    return RunResult(run, rows)
