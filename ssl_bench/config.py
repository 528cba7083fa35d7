"""Typed run configuration: schema defaults <- preset yaml <- CLI ``key=value``.

``method=``, ``backbone=`` and ``preset=`` select registered entries; every other override uses
OmegaConf's dotlist grammar (as Hydra does), e.g. ``data.n_local=6 optim.lr=5e-4``. The merge is
strict: an unknown key names the nearest valid key, a wrong type or value names the key and what is
allowed. Code receives the typed dataclasses, never raw dicts.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ssl_bench.errors import ConfigError


def choice(default: Any, choices: list, help: str = "") -> Any:
    """A dataclass field whose value must be one of ``choices`` (checked after the merge)."""
    return field(default=default, metadata={"choices": choices, "help": help})


@dataclass
class BackboneConfig:
    """Common backbone settings; each registered backbone subclasses this with its defaults."""

    name: str = "vit_tiny"
    img_size: int = 32


@dataclass
class DataConfig:
    """Dataset location and the multi-crop policy (DINO/BYOL augmentations)."""

    root: Optional[str] = None
    download: bool = False
    n_global: int = 2
    n_local: Optional[int] = None  # None: the method's default (its paper's setting)
    global_size: Optional[int] = None  # None: backbone.img_size
    local_size: Optional[int] = None  # None: global_size // 2
    global_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])
    blur: bool = True
    solarize: bool = True
    train_per_class: int = 0  # >0: the first N sorted files of each class (the protocol's subset)
    test_per_class: int = 0
    # >0: evaluate on a validation split instead of test/: the next N files of each train/ class after
    # the first train_per_class (PROTOCOL.md: tune on train images outside the pre-training subset)
    val_per_class: int = 0
    num_workers: int = 0  # measured: on 2 cores a worker process slows training (see README)
    # true: the loader ships uint8 crops (4x fewer bytes through worker queues and to the GPU) and the
    # engine converts and normalises them on the device
    normalize_on_device: bool = False
    # device: the loader ships one uint8 image per sample and the engine draws all crops of the batch at
    # once on the training device (kornia; ssl_bench/data/device_aug.py) instead of per image in PIL
    augment: str = choice("loader", ["loader", "device"])
    # data.augment=device: the size the loader brings images to (None: global_size). Small images of
    # one size can ship at their own size (32 for CIFAR): at 224 px crops that is 49x fewer bytes per
    # image and no upsampling in the workers; the crops are resized on the device either way
    device_load_size: Optional[int] = None


@dataclass
class OptimConfig:
    """AdamW with linear warm-up + cosine LR and cosine weight decay (DINO's recipe)."""

    epochs: int = 4
    batch_size: int = 128
    lr: float = 5e-4  # per 256 images; the engine scales it by global batch / 256
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0  # 0 disables
    optimizer: str = choice("adamw", ["adamw", "sgd"])


@dataclass
class EvalConfig:
    """Evaluation settings (k-NN follows DINO: weighted vote, T = 0.07)."""

    evals: list[str] = field(default_factory=lambda: ["knn"])
    knn_k: list[int] = field(default_factory=lambda: [10, 20, 100, 200])
    knn_temperature: float = 0.07
    knn_every: int = 0  # >0: also run k-NN every N epochs
    batch_size: int = 256
    baseline: bool = True  # also evaluate the same backbone at random init (same seed)
    # linear probe: logistic regression on cached frozen features, C chosen on a held-out 10% of train
    linear_avgpool: bool = False  # ViT: concatenate the mean patch token to the CLS token (DINO's option)
    linear_c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    linear_augmented: bool = False  # paper-grade path: SGD on random-resized-crop + flip inputs
    linear_epochs: int = 10  # augmented path only
    linear_lr: float = 0.01  # augmented path only, per 256 images
    # segmentation: a folder of images/ + masks/ pairs (binary foreground) or "voc" (torchvision VOC 2012)
    seg_root: Optional[str] = None
    seg_size: int = 64  # images are resized to this (square, a multiple of the patch size)
    seg_mass: float = 0.6  # attention Jaccard keeps the smallest patch set holding this attention mass
    seg_train_fraction: float = 0.5  # linear patch probe: first fraction of sorted pairs trains, rest tests


@dataclass
class ClusterConfig:
    """SLURM resources for ``launcher=slurm`` (submitit). One process per GPU, or
    ``tasks_per_node`` processes per node on CPU-only nodes."""

    partition: Optional[str] = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1  # CPU nodes: processes per node (GPU nodes: one per GPU)
    cpus_per_task: int = 1
    mem: Optional[str] = None  # e.g. "32G" per node
    time: str = "01:00:00"  # [D-]HH:MM:SS or minutes
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclude: Optional[str] = None
    comment: Optional[str] = None
    extra: list[str] = field(default_factory=list)  # more sbatch flags as key=value, e.g. [reservation=abc]
    max_requeues: int = 3
    log_dir: Optional[str] = None  # default: <run_dir>/slurm


@dataclass
class RunConfig:
    """Everything one run needs; saved as ``config.yaml`` in the run folder."""

    method: Any = None  # the registered method's config dataclass
    backbone: Any = None  # the registered backbone's config dataclass
    dataset: str = "digits"
    preset: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    precision: str = choice("fp32", ["fp32", "bf16"])
    device: str = choice("auto", ["auto", "cpu", "cuda"])
    threads: int = 0  # >0: torch.set_num_threads
    run_dir: Optional[str] = None  # default: a fresh folder under results_root
    results_root: str = "results/runs"
    resume: str = choice("never", ["never", "auto"])
    checkpoint_every_steps: int = 0  # >0: also checkpoint every N steps (resume mid-epoch)
    deterministic: bool = False
    compile: bool = False  # torch.compile every backbone (in place; checkpoints keep their keys)
    keep_cpu_memory: bool = True  # glibc: keep freed memory in the heap (no page faults per step); process-wide
    progress: bool = True
    launcher: str = choice("local", ["local", "slurm"])
    nproc: int = 1  # launcher=local: processes on this machine (DDP; gloo on CPU, NCCL on GPU)
    wait: bool = False  # launcher=slurm: block until the job ends, streaming its progress
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


SELECTORS = ("method", "backbone", "preset", "cluster")


def preset_names() -> list[str]:
    return sorted(p.stem for p in resources.files("ssl_bench").joinpath("configs").iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    """Load a shipped preset (``ssl_bench/configs/NAME.yaml``) or a yaml file path."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        res = resources.files("ssl_bench").joinpath("configs", f"{name}.yaml")
        if not res.is_file():
            raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(preset_names())} or a path to a .yaml file")
        path = Path(str(res))
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {name!r} must be a mapping of config keys")
    return data


def load_cluster_preset(name: str) -> dict:
    """A SLURM resource preset: ``slurm/presets/NAME.yaml`` shipped with the package, or a yaml path."""
    path = Path(name)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        res = resources.files("ssl_bench.slurm").joinpath("presets", f"{name}.yaml")
        if not res.is_file():
            names = sorted(p.name[:-5] for p in resources.files("ssl_bench.slurm").joinpath("presets").iterdir()
                           if p.name.endswith(".yaml"))
            raise ConfigError(f"unknown cluster preset {name!r}; valid: {', '.join(names)} or a path to a .yaml file")
        path = Path(str(res))
    return yaml.safe_load(path.read_text()) or {}


def parse_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` strings into selector values and the remaining dotlist."""
    selectors: dict[str, str] = {}
    rest: list[str] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"bad override {item!r}: expected key=value (e.g. method=dino optim.lr=5e-4)")
        key, value = item.split("=", 1)
        if key == "evals":  # shorthand: evals=knn,linear
            rest.append(f"eval.evals=[{value}]")
        elif key in SELECTORS:
            selectors[key] = value
        else:
            rest.append(item)
    return selectors, rest


def all_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a (structured) config."""
    keys = []
    for k, v in cfg.items() if hasattr(cfg, "items") else []:
        full = f"{prefix}{k}"
        if OmegaConf.is_dict(v):
            keys += all_keys(v, full + ".")
        else:
            keys.append(full)
    return keys


def _friendly(err: OmegaConfBaseException, schema: Any) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        close = difflib.get_close_matches(key, all_keys(schema), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return ConfigError(f"unknown config key {key!r}{hint}")
    if isinstance(err, ValidationError):
        first = str(err).splitlines()[0]
        return ConfigError(f"bad value for {key!r}: {first}")
    return ConfigError(f"config error at {key!r}: {str(err).splitlines()[0]}")


def _validate(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"bad value for {prefix}{f.name!r}: {value!r}; valid: {', '.join(map(str, choices))}")
        if dataclasses.is_dataclass(value):
            _validate(value, f"{prefix}{f.name}.")
    check = getattr(obj, "check", None)
    if callable(check):
        check()


def build_config(overrides: list[str] | None = None) -> RunConfig:
    """Resolve a RunConfig from CLI-style overrides (see module docstring)."""
    from ssl_bench.registry import BACKBONES, DATASETS, EVALS, METHODS

    selectors, dotlist = parse_overrides(list(overrides or []))
    preset_name = selectors.get("preset", "default")
    preset = load_preset(preset_name)
    preset_method = preset.pop("method", {}) or {}
    preset_backbone = preset.pop("backbone", {}) or {}
    if isinstance(preset_method, str):
        preset_method = {"name": preset_method}
    if isinstance(preset_backbone, str):
        preset_backbone = {"name": preset_backbone}
    method_name = selectors.get("method") or preset_method.get("name") or "dino"
    backbone_name = selectors.get("backbone") or preset_backbone.get("name") or "vit_tiny"
    m_entry = METHODS.get(method_name)
    b_entry = BACKBONES.get(backbone_name)

    schema = OmegaConf.structured(
        RunConfig(method=m_entry.config(name=method_name), backbone=b_entry.config(name=backbone_name), preset=preset_name)
    )
    OmegaConf.set_struct(schema, True)
    layers: list[dict] = []
    if preset:
        layers.append(preset)
    if preset_method and preset_method.get("name", method_name) == method_name:
        layers.append({"method": {k: v for k, v in preset_method.items() if k != "name"}})
    # A preset's backbone settings apply only to the backbone it names.
    if preset_backbone and preset_backbone.get("name", backbone_name) == backbone_name:
        layers.append({"backbone": {k: v for k, v in preset_backbone.items() if k != "name"}})
    if preset_name and preset_name in m_entry.presets:
        layers.append(m_entry.presets[preset_name])
    if "cluster" in selectors:
        layers.append({"cluster": load_cluster_preset(selectors["cluster"])})
    try:
        cfg = schema
        for layer in layers:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(layer))
        if dotlist:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
        run_cfg: RunConfig = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _friendly(err, schema) from None
    if run_cfg.dataset not in DATASETS:
        DATASETS.get(run_cfg.dataset)  # raises a UserError naming the valid datasets
    for name in run_cfg.eval.evals:
        EVALS.get(name)  # raises a UserError naming the valid evals
    _validate(run_cfg)
    return run_cfg


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def load_config(path: str | Path) -> RunConfig:
    """Load a saved ``config.yaml`` back into typed dataclasses (for eval/resume)."""
    data = yaml.safe_load(Path(path).read_text())
    method = data.pop("method")
    backbone = data.pop("backbone")
    over = [f"method={method['name']}", f"backbone={backbone['name']}"]
    flat = OmegaConf.to_container(OmegaConf.create({"method": method, "backbone": backbone, **data}))
    data_cfg = OmegaConf.create(flat)
    cfg = build_config(over)
    merged = OmegaConf.merge(OmegaConf.structured(cfg), data_cfg)
    return OmegaConf.to_object(merged)
