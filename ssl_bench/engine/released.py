"""Released checkpoints of the field, read as their authors' own evaluation code reads them.

Each layout names where a project keeps the backbone it evaluates and the prefix its loader strips; the
heads it drops (projection MLPs, prototypes, classifiers) are whatever lies outside the backbone's keys
under one of :data:`HEADS`. A file is tried against every layout and the one whose tensors fill the suite
backbone exactly is used; otherwise a one-line error names the keys it saw and the keys the backbone wants.
"""

from __future__ import annotations

import argparse
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssl_bench.backbones import TIMM_ARCHS
from ssl_bench.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    name: str
    container: str | None  # the top-level key holding the state dict (None: the file is the state dict)
    prefix: str  # stripped from every key of the evaluated backbone; other keys are not the backbone


LAYOUTS = (
    # DINO utils.load_pretrained_weights (facebookresearch/dino@7c446df:utils.py:71-81): checkpoint_key
    # "teacher", "module." and "backbone." (the MultiCropWrapper) removed, the DINOHead left out
    Layout("DINO full checkpoint (teacher, DDP)", "teacher", "module.backbone."),
    Layout("DINO full checkpoint (teacher)", "teacher", "backbone."),
    # MoCo v3 main_lincls.py (facebookresearch/moco-v3@c349e6e:main_lincls.py:177-185): "state_dict",
    # module.base_encoder.* kept up to its head/fc (the projector), the momentum encoder and predictor dropped
    Layout("MoCo v3", "state_dict", "module.base_encoder."),
    # MoCo v1/v2 main_lincls.py (facebookresearch/moco@010242b:main_lincls.py, "rename moco pre-trained
    # keys"): module.encoder_q.* up to encoder_q.fc, the key encoder and the queue dropped
    Layout("MoCo v2", "state_dict", "module.encoder_q."),
    # solo-learn main_linear.py (vturrisi/solo-learn@9187ea3:main_linear.py:74-84): the Lightning
    # checkpoint's "state_dict", backbone.* with the prefix removed (momentum_backbone, projector dropped)
    Layout("solo-learn", "state_dict", "backbone."),
    # SwAV eval_linear.py (facebookresearch/swav@06b1b7c:eval_linear.py:153-157): an optional "state_dict",
    # "module." removed; projection_head.* and prototypes.* are not the ResNet's
    Layout("SwAV (state_dict)", "state_dict", "module."),
    Layout("SwAV / DDP state dict", None, "module."),
    # timm / torchvision / DINO's released backbones (dino_deitsmall16_pretrain.pth): the model's own names
    Layout("timm / torchvision state dict", None, ""),
    Layout("state dict under 'state_dict'", "state_dict", ""),
    Layout("state dict under 'model'", "model", ""),
)
# first key segments of the heads the layouts above carry beside the backbone
HEADS = ("head", "fc", "projection_head", "prototypes", "predictor", "projector", "classifier", "heads")
# plain-value classes released checkpoints pickle beside their tensors (DINO and MoCo save their argparse args)
SAFE_GLOBALS: list[Any] = [argparse.Namespace]


def load_file(path: str | Path) -> Any:
    """The file's contents: a ``.safetensors`` file, or a torch file loaded with ``weights_only=True``
    (argparse Namespaces allowed; any other Python object refused with a one-line error)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights={str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"weights={str(path)!r} is an empty file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        try:
            return load_safetensors(str(path))
        except Exception as err:
            raise UserError(f"weights={str(path)!r} is not a readable safetensors file ({err})") from None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err) and "global" not in str(err):  # not a pickle of objects: not a checkpoint
            detail = [s.strip() for s in str(err).splitlines() if s.strip().startswith("Unsupported")]
            raise UserError(
                f"weights={str(path)!r} is not a torch checkpoint, safetensors file or state dict"
                + (f" ({detail[0][:80]})" if detail else "")
            ) from None
        first = str(err).splitlines()
        named = next((line.strip() for line in first if "GLOBAL" in line or "global" in line), "")
        raise UserError(
            f"weights={str(path)!r} holds Python objects that weights_only=True refuses"
            f"{' (' + named[:160] + ')' if named else ''}; if you trust the file, save its state dict "
            "alone (torch.save(ckpt['state_dict'], 'weights.pt')) and pass that"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as err:
        raise UserError(
            f"weights={str(path)!r} cannot be read as tensors only (weights_only=True): "
            f"{(str(err).splitlines() or [type(err).__name__])[0][:160]}"
        ) from None


def tensors(obj: Any) -> dict[str, torch.Tensor] | None:
    if not isinstance(obj, dict):
        return None
    state = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    return state or None


def is_suite_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and {"method", "optimizer", "rng"} <= set(obj)


def backbone_state(
    obj: Any, own: dict[str, torch.Tensor], path: str, backbone: str
) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of ``obj`` (a loaded file) that fill the state dict ``own`` and the layout they were
    found in; raises a one-line :class:`UserError` naming what the file holds otherwise."""
    if is_suite_checkpoint(obj):
        raise UserError(
            f"weights={path!r} is an ssl-bench training checkpoint: score its run with "
            f"`eval run={str(Path(path).parent)!r}` (or export it first with `export run=... out=FILE`)"
        )
    near: list[tuple[int, str, list[str], list[str]]] = []
    for layout in LAYOUTS:
        held = obj if layout.container is None else obj.get(layout.container) if isinstance(obj, dict) else None
        source = tensors(held)
        if source is None:
            continue
        cut = len(layout.prefix)
        state = {k[cut:]: v for k, v in source.items() if k.startswith(layout.prefix)}
        state = {k: v for k, v in state.items() if k in own or k.split(".", 1)[0] not in HEADS}
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if not missing and not unexpected:
            return state, layout.name
        if state:
            near.append((len(missing) + len(unexpected), layout.name, missing, unexpected))
    top = tensors(obj)
    seen = list(top) if top else []
    if not top and isinstance(obj, dict):
        seen = [f"{k}/" for k, v in obj.items() if isinstance(v, dict)]
    if near:
        _, name, missing, unexpected = min(near)
        detail = (
            f"closest layout {name}: missing {len(missing)} keys (e.g. {missing[0]})"
            if missing
            else f"closest layout {name}: {len(unexpected)} keys the backbone lacks (e.g. {unexpected[0]})"
        )
    else:
        detail = "no layout holds tensors"
    raise UserError(
        f"weights={path!r} fit no known checkpoint layout for backbone={backbone} ({detail}); the file holds "
        f"{', '.join(seen[:4]) or 'no tensors'}{' ...' if len(seen) > 4 else ''}, the backbone wants "
        f"{', '.join(list(own)[:3])} ...; known: {', '.join(sorted({x.name.split(' (')[0] for x in LAYOUTS}))}"
    )


TIMM_SCHEMES = ("timm:", "hf-hub:")


def from_timm(spec: str) -> tuple[dict[str, torch.Tensor], list[str], dict]:
    """``weights=timm:NAME`` / ``weights=hf-hub:ORG/NAME``: timm's pretrained weights (downloaded once into
    the Hugging Face cache, read from it offline), the suite backbone overrides of their architecture and
    input size, and their ``pretrained_cfg``."""
    import timm

    name = spec[len("timm:") :] if spec.startswith("timm:") else spec
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as err:  # unknown name, no network and nothing cached, a broken download
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"weights={spec!r}: timm could not load these pretrained weights ({first})") from None
    pcfg: dict[str, Any] = dict(model.pretrained_cfg)  # type: ignore[arg-type]
    suite = {arch: key for key, arch in TIMM_ARCHS.items()}.get(pcfg.get("architecture", ""))
    if suite is None:
        raise UserError(
            f"weights={spec!r} is a timm {pcfg.get('architecture')!r}, none of the suite's backbones "
            f"({', '.join(f'{k} = {v}' for k, v in TIMM_ARCHS.items())})"
        )
    over = [f"backbone={suite}", f"backbone.img_size={pcfg.get('input_size', (3, 224, 224))[-1]}"]
    if hasattr(model, "patch_embed"):
        over.append(f"backbone.patch_size={model.patch_embed.patch_size[0]}")  # type: ignore[union-attr,index]
    else:
        over.append("backbone.cifar_stem=false")
    keep = ("architecture", "tag", "hf_hub_id", "input_size", "interpolation", "crop_pct", "mean", "std")
    return model.state_dict(), over, {"timm": name, "pretrained_cfg": {k: pcfg.get(k) for k in keep}}
