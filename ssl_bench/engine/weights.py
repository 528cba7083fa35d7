"""Backbones in and out of the suite.

``export run=RUN [format=timm|torchvision] out=FILE``: the run's evaluation encoder (DINO: the teacher, as
DINO releases it; BYOL/MoCo: the online/query backbone) as a plain state dict (``FILE``, loads with
``torch.load(weights_only=True)``), the same tensors as ``.safetensors``, and a ``.json`` beside them with the
``timm.create_model`` (or torchvision) arguments that rebuild the model.

``eval weights=FILE [backbone=...] evals=knn,linear,seg``: scores any such file (or a released checkpoint
whose keys match timm's, e.g. DINO's ViTs) with the suite's protocol, next to the same backbone at random
initialisation, in a run folder that ``report`` reads like any other.
"""

from __future__ import annotations

import json
import logging
import pickle
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
from ssl_bench.engine.setup import RunResult, build_method, pick_device, prepare_process
from ssl_bench.errors import UserError
from ssl_bench.registry import EVALS
from ssl_bench.results import RunDir, new_run_id

log = logging.getLogger(__name__)

FORMATS = ("timm", "torchvision")
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
_WRAPPERS = ("state_dict", "model", "teacher", "backbone")  # where released checkpoints keep the weights
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


def _cifar_stem(model: nn.Module, padding: int = 1) -> None:
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=padding, bias=False)
    model.maxpool = nn.Identity()


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "timm") -> list[Path]:
    """Write the run's evaluation encoder as FILE (state dict), FILE.safetensors and FILE.json."""
    from safetensors.torch import save as safetensors_bytes

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
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
    out = Path(out)
    if out.suffix == ".safetensors":
        raise UserError(
            f"out={str(out)!r}: name the state-dict file (e.g. encoder.pt); the .safetensors copy is written beside it"
        )
    meta = {
        "format": fmt,
        "arch": enc.arch,
        "cifar_stem": bool(enc.cifar_stem),
        "stem_padding": int(getattr(enc, "stem_padding", 1)),
        "embed_dim": enc.embed_dim,
        "run": run.run_id,
        "method": cfg.method.name,
        "dataset": cfg.dataset,
        "epochs": cfg.optim.epochs,
        "encoder": f"{type(method).__name__}.encoder()",
        "ssl_bench_backbone": asdict(cfg.backbone),
    }
    if fmt == "timm":
        meta["timm_create_model"] = {"model_name": enc.arch, "pretrained": False, **enc.create_kwargs}
    else:
        meta["torchvision"] = {
            "model": f"torchvision.models.{enc.arch}",
            "weights": None,
            "then": "model.fc = torch.nn.Identity()",
        }
    if enc.cifar_stem:
        meta["then_cifar_stem"] = (
            f"model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, {meta['stem_padding']}, bias=False); "
            "model.maxpool = torch.nn.Identity()"
        )
    paths = [out, out.with_suffix(".safetensors"), out.with_suffix(".json")]
    save_torch(paths[0], state)
    write_atomic(paths[1], lambda f: f.write(safetensors_bytes(state)), mode="wb")
    write_json(paths[2], meta)
    return paths


def build_exported(path: str | Path) -> nn.Module:
    """A fresh timm / torchvision model, built from the ``.json`` beside an exported file and loaded with
    ``weights_only=True``: what a user of the exported weights does, and what the tests check."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta["format"] == "timm":
        import timm

        model = timm.create_model(**meta["timm_create_model"])
    else:
        import torchvision

        model = getattr(torchvision.models, meta["arch"])(weights=None)
        model.fc = nn.Identity()
    if meta.get("cifar_stem"):
        _cifar_stem(model, int(meta.get("stem_padding", 1)))
    model.load_state_dict(read_weights(path))
    return model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a tensors-only torch file (never unpickling objects);
    unwraps ``state_dict`` / ``teacher`` / ... containers and ``module.`` / ``backbone.`` prefixes."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights={str(path)!r} does not exist")
    state: Any
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:
            raise UserError(f"weights={str(path)!r} is not a readable safetensors file ({err})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
            raise UserError(
                f"weights={str(path)!r} cannot be read as tensors only (weights_only=True): "
                f"{str(err).splitlines()[0][:160]}"
            ) from None
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise UserError(f"weights={str(path)!r} holds no tensors at the top or under {', '.join(_WRAPPERS)}")
        state = inner
    if not isinstance(state, dict):
        raise UserError(f"weights={str(path)!r} is not a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_into(encoder: Backbone, state: dict[str, torch.Tensor], path: str) -> None:
    """Load ``state`` into the suite backbone's timm model; a classifier head of the file is dropped."""
    own = encoder.model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(("fc.", "head."))}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        what = (
            f"missing {len(missing)} keys (e.g. {missing[0]})"
            if missing
            else f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})"
            if unexpected
            else f"{shape[0]} has shape {tuple(state[shape[0]].shape)}, the backbone {tuple(own[shape[0]].shape)}"
        )
        raise UserError(
            f"weights={path!r} do not fit backbone={encoder.arch}: {what}; pass the backbone (and "
            "backbone.img_size / patch_size / cifar_stem) the weights were trained with"
        )
    encoder.model.load_state_dict(state)


def weights_overrides(path: str) -> list[str]:
    """The ``backbone=...`` overrides recorded by ``export`` beside the file (none for other files)."""
    meta_path = Path(path).with_suffix(".json")
    if not meta_path.is_file():
        return []
    meta = json.loads(meta_path.read_text())
    bb = dict(meta.get("ssl_bench_backbone") or {})
    name = bb.pop("name", None)
    if not name:
        return []
    return [f"backbone={name}"] + [f"backbone.{k}={'null' if v is None else v}" for k, v in bb.items()]


def evaluate_weights(overrides: list[str]):
    """``eval weights=FILE ...``: score the file's backbone and the same backbone at random init."""

    path = next(o.split("=", 1)[1] for o in overrides if o.startswith("weights="))
    state = read_weights(path)
    rest = [o for o in overrides if not o.startswith("weights=")]
    user_backbone = [o for o in rest if o.startswith("backbone")]
    over = (user_backbone or weights_overrides(path)) + [o for o in rest if not o.startswith("backbone")]
    if not any(o.startswith("backbone=") for o in over):
        raise UserError(
            f"weights={path!r} has no export .json beside it: pass backbone=NAME (and its img_size, "
            "patch_size, ...) the weights were trained with"
        )
    cfg = build_config(over)
    cfg = replace(cfg, weights=str(Path(path).resolve()))
    for name in cfg.eval.evals:
        EVALS.get(name)
    cfg = prepare_process(cfg)
    device = pick_device(cfg.device)
    encoder = build_method(cfg).encoder()
    load_into(encoder, state, path)
    splits = run_datasets(cfg)
    run = RunDir(
        Path(cfg.results_root) / new_run_id(f"weights-{Path(path).stem}", cfg.backbone.name, cfg.dataset, cfg.seed)
    )
    run.path.mkdir(parents=True)
    try:
        with run.lock():
            run.write_config(to_yaml(cfg))
            rows = evaluate(cfg, device, encoder.to(device), splits, cfg.eval.evals, write=run.write_metrics)
            if cfg.eval.baseline:
                rows += evaluate_baseline(cfg, device, splits, cfg.eval.evals, write=run.write_metrics)
    except BaseException:
        import shutil

        shutil.rmtree(run.path, ignore_errors=True)  # nothing half-written
        raise
    return RunResult(run, rows)
