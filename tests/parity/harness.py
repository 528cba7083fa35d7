"""The parity harness: the suite's training step beside the authors' own code, from the same weights on
the same views. The reference checkouts are read from ``$SSL_BENCH_REFERENCES`` (one folder per
repository, docs/parity.md) and never copied here; what lives here is ours: importing them, the shims
they need on a CPU-only single process, the name maps and the step-by-step comparison."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from PIL import Image

from ssl_bench.config import build_config
from ssl_bench.engine.optim import make_optimizer
from ssl_bench.engine.step import make_train_step
from ssl_bench.engine.train import build_method, resolve

# repository folder name -> the commit the parity runs pin (docs/parity.md)
PINNED = {
    "dino": "7c446df",
    "moco": "7397dfe",
    "moco-v3": "c349e6e",
    "swav": "06b1b7c",
    "apex": "0bfb830",
    "solo-learn": "9187ea3",
    "deepmind-research": "82a3474",  # byol/ only, the official BYOL code (JAX)
    "simclr": "383d414",  # google-research/simclr, its tf2/ code (TensorFlow)
}
# top-level module names the references share (``utils``, ``moco``): dropped from sys.modules around
# each import so that two checkouts never see each other's
_SHADOWED = ("utils", "vision_transformer", "vits", "moco", "main_dino", "main_moco", "src", "solo", "byol")


def references() -> Path | None:
    root = os.environ.get("SSL_BENCH_REFERENCES")
    return Path(root) if root and Path(root).is_dir() else None


def skip_reason(name: str) -> str | None:
    """Why the parity run against ``name`` cannot run here (None: it can)."""
    root = references()
    if root is None:
        return "SSL_BENCH_REFERENCES is not set to the reference checkouts (docs/parity.md)"
    if not (root / name).is_dir():
        return f"no {name} checkout in SSL_BENCH_REFERENCES={root} (docs/parity.md)"
    return None


def needs_reason(modules: tuple[str, ...], what: str, name: str) -> str | None:
    """Why a comparison with the ``name`` checkout, whose code needs the packages ``modules``, cannot run
    here (None: it can)."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed ({what}; docs/parity.md)"
    return skip_reason(name)


def _drop_shadowed() -> dict:
    gone = {}
    for key in list(sys.modules):
        if key.split(".")[0] in _SHADOWED:
            gone[key] = sys.modules.pop(key)
    return gone


def import_reference(name: str, *modules: str) -> list:
    """Import ``modules`` from the ``name`` checkout as its own scripts do (its folder first on the path)."""
    folder = str(references() / name)  # type: ignore[operator]
    saved = _drop_shadowed()
    sys.path.insert(0, folder)
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(folder)
        _drop_shadowed()
        sys.modules.update(saved)


@contextlib.contextmanager
def cpu_single_process() -> Iterator[None]:
    """The shims the references need on this machine, undone afterwards: a 1-process gloo group (their
    ``dist.all_reduce`` / ``all_gather`` / ``broadcast`` calls), ``Tensor.cuda`` / ``Module.cuda`` as
    no-ops and ``torch.cuda.synchronize`` as a no-op (they assume a GPU per process)."""
    made = not dist.is_initialized()
    if made:
        store = tempfile.NamedTemporaryFile(prefix="ssl-bench-parity-", delete=False).name
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    saved = torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.synchronize
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.cuda.synchronize = lambda *a, **k: None
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.cuda.synchronize = saved  # type: ignore[method-assign]
        if made:
            dist.destroy_process_group()


@contextlib.contextmanager
def old_timm_names() -> Iterator[None]:
    """moco-v3's ``vits.py`` was written against timm 0.4: ``timm.models.layers.helpers.to_2tuple`` and
    ``VisionTransformer.num_tokens`` (today ``timm.layers.to_2tuple`` and ``num_prefix_tokens``)."""
    import timm.layers
    from timm.models.vision_transformer import VisionTransformer

    helpers = types.ModuleType("timm.models.layers.helpers")
    helpers.to_2tuple = timm.layers.to_2tuple  # type: ignore[attr-defined]
    had = "timm.models.layers.helpers" in sys.modules
    sys.modules.setdefault("timm.models.layers.helpers", helpers)
    VisionTransformer.num_tokens = property(lambda self: self.num_prefix_tokens)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del VisionTransformer.num_tokens  # type: ignore[attr-defined]
        if not had:
            sys.modules.pop("timm.models.layers.helpers", None)


@contextlib.contextmanager
def apex_larc_only() -> Iterator[None]:
    """main_swav.py imports ``apex`` (built with CUDA extensions) for ``apex.parallel.LARC`` and for fp16 and
    SyncBN, which fp32 on one process never reaches: an ``apex`` package holding only the checkout's own
    ``apex/parallel/LARC.py`` (pure PyTorch) and an empty ``apex.amp``."""
    spec = importlib.util.spec_from_file_location(
        "apex.parallel.LARC",
        str(references() / "apex" / "apex" / "parallel" / "LARC.py"),  # type: ignore[operator]
    )
    larc = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(larc)  # type: ignore[union-attr]
    apex, parallel = types.ModuleType("apex"), types.ModuleType("apex.parallel")
    apex.parallel, parallel.LARC = parallel, larc  # type: ignore[attr-defined]
    # main() passes apex.amp to restart_from_checkpoint, which reads it only when a checkpoint exists
    apex.amp = types.ModuleType("apex.amp")  # type: ignore[attr-defined]
    names = {"apex": apex, "apex.parallel": parallel, "apex.parallel.LARC": larc}
    saved = {k: sys.modules[k] for k in names if k in sys.modules}
    sys.modules.update(names)
    try:
        yield
    finally:
        for k in names:
            sys.modules.pop(k, None)
        sys.modules.update(saved)


@contextlib.contextmanager
def lightning_alias() -> Iterator[None]:
    """solo-learn imports ``lightning.pytorch``; the ``pytorch_lightning`` package lightly brings is the same
    code under its older name."""
    import pytorch_lightning

    pkg = types.ModuleType("lightning")
    pkg.pytorch = pytorch_lightning  # type: ignore[attr-defined]
    names = {"lightning": pkg, "lightning.pytorch": pytorch_lightning}
    saved = {k: sys.modules[k] for k in names if k in sys.modules}
    for k, v in names.items():
        sys.modules.setdefault(k, v)
    try:
        yield
    finally:
        for k in names:
            if k not in saved:
                sys.modules.pop(k, None)


class _Reached(Exception):
    """Raised in place of the reference's training loop once its set-up has called it."""


def setup_of(entry: Callable[[], object], module, name: str) -> dict:
    """Run a reference's own set-up (``entry``: its ``main``, ``train_dino``, ``main_worker``) until it first
    calls ``module.<name>`` (its training loop), and return that call's arguments by parameter name: the
    model, optimizer, schedules and arguments as its script builds them. The loop itself is not entered."""
    target = getattr(module, name)
    signature = inspect.signature(target)
    captured: dict = {}

    def reached(*args, **kwargs):
        captured.update(signature.bind(*args, **kwargs).arguments)
        raise _Reached

    with mock.patch.object(module, name, reached):
        try:
            entry()
        except _Reached:
            pass
    if not captured:
        raise AssertionError(f"the reference's set-up returned without calling {name}")
    return captured


def image_folder(root: Path, n: int, size: int = 8) -> Path:
    """An ImageFolder tree of ``n`` small images in one class, for a reference's set-up to count (its
    loader's length); the parity runs feed their own views to its training loop."""
    folder = root / "train" / "a"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root / "train"


def argv(flags: dict) -> list[str]:
    """``{"name": value or [values]}`` as a script's command line (``--name v1 v2``)."""
    out: list[str] = []
    for key, value in flags.items():
        out += [f"--{key}", *(str(v) for v in (value if isinstance(value, list) else [value]))]
    return out


def cifar_resnet18(**kwargs) -> torch.nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem the suite's backbone uses (3x3/1 first convolution, no
    max-pool): the harness's ``--arch`` for the MoCo references."""
    net = torchvision.models.resnet.resnet18(**kwargs)
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


class DDPShim(torch.nn.Module):
    """What the references reach through DistributedDataParallel: ``.module`` and the forward."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def load_mapped(
    dst: torch.nn.Module,
    src: dict[str, torch.Tensor],
    name_map: Callable[[str], str | None],
    not_ours: tuple[str, ...] = (),
) -> None:
    """Copy the suite's tensors ``src`` into the reference module ``dst`` through ``name_map`` (suite
    name -> reference name, None: not in the reference); every tensor of ``dst`` must be written except
    those under the prefixes ``not_ours`` (parts of the reference with no counterpart in the method, such
    as solo-learn's online linear classifier, which trains on detached features)."""
    want = dst.state_dict()
    written = set()
    with torch.no_grad():
        for key, value in src.items():
            ref = name_map(key)
            if ref is None:
                continue
            if ref not in want:
                raise KeyError(f"name map sends {key!r} to {ref!r}, which the reference lacks")
            if want[ref].shape != value.shape:
                raise ValueError(f"{key!r} -> {ref!r}: shape {tuple(value.shape)} vs {tuple(want[ref].shape)}")
            want[ref].copy_(value)
            written.add(ref)
    missing = [
        k for k in want if k not in written and not k.endswith("num_batches_tracked") and not k.startswith(not_ours)
    ]
    if missing:
        raise KeyError(f"reference tensors the name map never wrote: {missing[:5]}")


@dataclass
class StepRecord:
    """One step of either side: the loss, the values it ran with and its state after the step."""

    loss: float
    values: dict[str, float]
    state: dict[str, torch.Tensor]


@dataclass
class Comparison:
    method: str
    steps: int = 0
    max_loss_rel: float = 0.0
    max_param: float = 0.0  # tensors that received a gradient, and the buffers
    max_apart: float = 0.0  # the tensors bounded on their own (no gradient, or sensitive to rounding)
    max_value: float = 0.0  # |LR / weight decay / momentum / temperature the two sides used|
    first_difference: str = ""
    worst: dict[str, float] = field(default_factory=dict)  # tensor name -> max abs difference

    def line(self) -> str:
        return (
            f"{self.method}: {self.steps} steps, max loss rel diff {self.max_loss_rel:.2e}, "
            f"max param diff {self.max_param:.2e} (bounded apart {self.max_apart:.2e}), "
            f"max schedule diff {self.max_value:.2e}, first difference: {self.first_difference or 'none'}"
        )


def compare(
    method: str,
    ours: list[StepRecord],
    theirs: list[StepRecord],
    loss_tol: float,
    param_tol: float,
    value_tol: float = 1e-12,
    apart: Callable[[str], bool] = lambda name: False,
    apart_tol: float = 0.0,
) -> Comparison:
    """Every step: the loss (relative), each schedule value and every tensor of ``state`` (absolute, or
    relative to its largest entry where that exceeds 1).
    Tensors for which ``apart(name)`` holds are bounded by ``apart_tol`` instead: those that get no
    gradient in either code (or a part of them gets none, such as the key bias of a ViT's qkv, which
    softmax ignores), which Adam-type updates move by about the LR in the direction of rounding noise, and
    those a test file names as sensitive to rounding order, with its reason."""
    if len(ours) != len(theirs):
        raise AssertionError(f"{method}: {len(ours)} suite steps vs {len(theirs)} reference steps")
    c = Comparison(method, len(ours))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        rel = abs(a.loss - b.loss) / max(abs(b.loss), 1e-12)
        c.max_loss_rel = max(c.max_loss_rel, rel)
        if rel > loss_tol and not c.first_difference:
            c.first_difference = f"step {i}: loss {a.loss:.8g} vs {b.loss:.8g}"
        for k in b.values:
            d = abs(a.values[k] - b.values[k])
            c.max_value = max(c.max_value, d)
            if d > value_tol * max(1.0, abs(b.values[k])) and not c.first_difference:
                c.first_difference = f"step {i}: {k} {a.values[k]:.8g} vs {b.values[k]:.8g}"
        for k, t in b.state.items():
            # absolute for tensors of scale <= 1, relative to the largest entry above (BN running variances)
            scale = max(1.0, t.abs().max().item()) if t.numel() else 1.0
            d = (a.state[k].double() - t.double()).abs().max().item() / scale if t.numel() else 0.0
            c.worst[k] = max(c.worst.get(k, 0.0), d)
            loose = apart(k)
            if loose:
                c.max_apart = max(c.max_apart, d)
            else:
                c.max_param = max(c.max_param, d)
            if d > (apart_tol if loose else param_tol) and not c.first_difference:
                c.first_difference = f"step {i}: {k} differs by {d:.3g}"
    return c


def min_weight_decay(opt: torch.optim.Optimizer) -> float:
    """The smallest weight decay any parameter is stepped with (0 when biases and norms are exempt)."""
    return min(float(g["weight_decay"]) for g in opt.param_groups if g["params"])


def snapshot(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in named.items()}


def prefix_map(pairs: tuple[tuple[str, str], ...]) -> Callable[[str], str | None]:
    """A name map from (suite prefix, reference prefix) pairs; names under none of them map to None."""

    def name(key: str) -> str | None:
        for ours, theirs in pairs:
            if key.startswith(ours):
                return theirs + key[len(ours) :]
        return None

    return name


def mapped(named: dict[str, torch.Tensor], name_map: Callable[[str], str | None]) -> dict[str, torch.Tensor]:
    """``named`` under the reference's names: tensors the map drops, and BN step counters, left out."""
    out = {}
    for key, value in named.items():
        ref = name_map(key)
        if ref is not None and not ref.endswith("num_batches_tracked"):
            out[ref] = value
    return out


@dataclass
class SuiteRun:
    cfg: object
    method: torch.nn.Module
    init: dict[str, torch.Tensor]  # the method's state before the first step (the reference starts from it)
    records: list[StepRecord]


def suite_steps(
    overrides: list[str],
    views: Callable[[int], list[torch.Tensor]],
    steps: int,
    spe: int,
    state: Callable[[torch.nn.Module], dict[str, torch.Tensor]],
    before: Callable[[torch.nn.Module], dict[str, torch.Tensor]] | None = None,
    double: bool = False,
    seed: int | None = None,
) -> SuiteRun:
    """The suite's side of every parity run: the recipe ``overrides`` built as ``run`` builds it, its own
    optimizer and train step over ``views(step)`` for ``steps`` steps of ``spe`` per epoch, recording the
    loss, the LR / weight decay (and the smallest any parameter gets) / every schedule value the step used,
    and ``state(method)`` after each step, plus ``before(method)`` taken before it (the tensors the
    reference reads at the start of a step). ``double``: fp64 weights; ``seed``: torch's generator before
    the first step (draws inside the step, such as shuffle-BN's permutations)."""
    cfg = resolve(build_config(overrides))
    method = build_method(cfg)
    if double:
        method = method.double()
    init = {k: v.clone() for k, v in method.state_dict().items()}
    opt = make_optimizer(cfg.optim, method)
    step_fn = make_train_step(cfg, method, opt, spe, torch.device("cpu"))
    method.train()
    if seed is not None:
        torch.manual_seed(seed)
    records = []
    for step in range(steps):
        pre = snapshot(before(method)) if before is not None else {}
        out, values, lr, wd = step_fn(views(step), step, step // spe)
        vals = {k: float(v) for k, v in values.items()} | {"lr": lr, "wd": wd, "wd_min": min_weight_decay(opt)}
        records.append(StepRecord(out["loss"].item(), vals, {**snapshot(state(method)), **pre}))
    return SuiteRun(cfg, method, init, records)


def lars_against(
    cfg, method: torch.nn.Module, theirs: Callable[[float, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
) -> None:
    """The suite's optimizer for ``cfg`` against an official LARS over ``method``'s trainable parameters
    (fp64): 8 steps of the same gradients (scaled 1e-2, 1e-1, 1 in turn: below and above the decay
    term) at LRs 0.5, 1, 1.5 in turn. ``theirs(lr, grads)`` steps the official optimizer and returns its
    parameters by suite name; every parameter agrees to 1e-12 after every step."""
    opt = make_optimizer(cfg.optim, method)
    named = {n: p for n, p in method.named_parameters() if p.requires_grad}
    g = torch.Generator().manual_seed(0)
    for step in range(8):
        lr = 0.5 * (1 + step % 3)
        scale = 10.0 ** (step % 3 - 2)
        grads = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) * scale for n, p in named.items()}
        want = theirs(lr, grads)
        for n, p in named.items():
            p.grad = grads[n].clone()
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_mult"]
            if group["regularize"]:
                group["weight_decay"] = cfg.optim.weight_decay
        opt.step()
        for n, p in named.items():
            diff = (p.detach() - want[n]).abs().max().item()
            assert diff < 1e-12, f"step {step}: {n} differs by {diff:.3g}"
