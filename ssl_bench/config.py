"""Typed run configuration: schema defaults <- preset yaml <- CLI ``key=value``.

``method=``, ``backbone=`` and ``preset=`` select registered entries; every other override uses
OmegaConf's dotlist grammar (as Hydra does), e.g. ``data.n_local=6 optim.lr=5e-4``. The merge is
strict: an unknown key names the nearest valid key, a wrong type or value names the key and what is
allowed. Code receives the typed dataclasses, never raw dicts.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_bench.atomic import read_yaml
from ssl_bench.errors import ConfigError
from ssl_bench.overrides import CONTROL_CHARS, SELECTORS, all_keys, friendly_error, parse_overrides  # noqa: F401
from ssl_bench.presets import load_cluster_preset, load_preset, preset_names, recipe_names  # noqa: F401
from ssl_bench.registry import BACKBONES, DATASETS, EVALS, METHODS


def choice(default: Any, choices: list, help: str = "") -> Any:
    """A dataclass field whose value must be one of ``choices`` (checked after the merge)."""
    return field(default=default, metadata={"choices": choices, "help": help})


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: ``lo`` / ``hi`` bounds (None: unbounded), open or closed; for a list
    field, every entry, and at least one entry."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:  # NaN
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {num(self.hi)}"  # type: ignore[arg-type]


def bounded(
    default: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    note: str = "",
) -> Any:
    """A numeric field (or list of numbers) checked against its :class:`Range` after the merge; ``note``
    is added to the error (what the value means). None passes where the field is optional."""
    rng = Range(lo, hi, lo_open, hi_open)
    meta = {"range": rng, "note": note}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_range(key: str, value: Any, rng: Range, note: str) -> None:
    if value is None:
        return
    entries = value if isinstance(value, list) else [value]
    if entries and all(rng.holds(v) for v in entries):
        return
    what = f"a non-empty list of numbers {rng.describe()}" if isinstance(value, list) else rng.describe()
    raise ConfigError(f"bad value for {key!r}: {value!r}; valid: {what}{f' ({note})' if note else ''}")


@dataclass
class BackboneConfig:
    """Common backbone settings; each registered backbone subclasses this with its defaults."""

    name: str = "vit_tiny"  # the registered backbone (backbone=NAME on the command line)
    img_size: int = 32  # the input size it is built for (ViT position grid; ResNets take any size)

    def check(self) -> None:
        if self.img_size < 1:
            raise ConfigError(f"bad value for 'backbone.img_size': {self.img_size}; valid: a positive number of pixels")


@dataclass
class ViewAugConfig:
    """Probabilities that differ between crop kinds (first global, second global, local crops)."""

    blur_p: float = 0.5  # probability of a Gaussian blur (DINO: 1.0 first global, 0.1 second, 0.5 local)
    solarize_p: float = 0.0  # probability of solarisation (DINO / BYOL: 0.2 on the second global view only)


@dataclass
class AugConfig:
    """The augmentation policy of every crop; the defaults are DINO's and BYOL's (Grill et al. 2020,
    Table 6; DINO ``main_dino.py`` DataAugmentationDINO). Each method's recipe sets its own. Both crop
    paths (PIL in the loader, batched tensor ops on the device) build from it."""

    flip_p: float = 0.5  # horizontal flip probability (DINO, BYOL, SimCLR, MoCo, SwAV: 0.5)
    jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8  # probability of the colour jitter (DINO / BYOL: 0.8)
    grey_p: float = 0.2  # probability of greyscale (DINO / BYOL: 0.2)
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])  # [min, max] blur sigma (DINO: 0.1-2.0)
    # tenth: a Gaussian kernel of ~10% of the crop (BYOL: 23 px at 224; 3 taps at 32 px, which truncates
    # sigma 2 to 0.58 of its strength); pil: PIL's ImageFilter.GaussianBlur(radius=sigma), as the DINO, MoCo,
    # SwAV and solo-learn transforms blur (the device path: a kernel of 2 ceil(3 sigma_max) + 1 taps)
    blur_kernel: str = choice("tenth", ["tenth", "pil"])
    # the random resized crop's resampling: bicubic (DINO, solo-learn) or bilinear (torchvision's default,
    # which MoCo v2, MoCo v3 and SwAV keep)
    interpolation: str = choice("bicubic", ["bicubic", "bilinear"])
    global1: ViewAugConfig = field(default_factory=lambda: ViewAugConfig(blur_p=1.0, solarize_p=0.0))
    global2: ViewAugConfig = field(default_factory=lambda: ViewAugConfig(blur_p=0.1, solarize_p=0.2))
    local: ViewAugConfig = field(default_factory=lambda: ViewAugConfig(blur_p=0.5, solarize_p=0.0))

    def check(self) -> None:
        probs = {"flip_p": self.flip_p, "jitter_p": self.jitter_p, "grey_p": self.grey_p}
        for view in ("global1", "global2", "local"):
            v = getattr(self, view)
            probs.update({f"{view}.blur_p": v.blur_p, f"{view}.solarize_p": v.solarize_p})
        for key, p in probs.items():
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"bad value for 'data.aug.{key}': {p}; valid: a probability in [0, 1]")
        if len(self.jitter) != 4 or min(self.jitter) < 0 or self.jitter[3] > 0.5:
            raise ConfigError(
                f"bad value for 'data.aug.jitter': {self.jitter}; valid: [brightness, contrast, "
                "saturation, hue], each >= 0, hue <= 0.5"
            )
        if len(self.blur_sigma) != 2 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(
                f"bad value for 'data.aug.blur_sigma': {self.blur_sigma}; valid: [min, max], 0 < min <= max"
            )


@dataclass
class DataConfig:
    """Dataset location, crop counts, sizes and scales, and the augmentation policy (``data.aug``)."""

    root: Optional[str] = None  # the dataset's folder (ImageFolder tree or torchvision's format); ~ expands
    download: bool = False  # cifar10 / cifar100 / stl10: let torchvision download into data.root
    # folder datasets: the sub-folder of data.root to pre-train on, and the one to test on (None: test/,
    # or val/ when there is no test/, as ImageNet ships). A train folder of images without class
    # sub-folders is unlabelled: pre-training only, evaluated on eval.dataset
    train_split: str = "train"
    test_split: Optional[str] = None  # the sub-folder to test on
    n_global: int = bounded(2, 2, note="every method pairs two global views")
    n_local: Optional[int] = bounded(None, 0)  # None: the method's default (its paper's setting)
    global_size: Optional[int] = bounded(None, 1)  # None: backbone.img_size
    local_size: Optional[int] = bounded(None, 1)  # None: global_size // 2
    # random-resized-crop area range of the global crops, fractions of the image (DINO main_dino.py
    # --global_crops_scale 0.4 1; each recipe sets its own)
    global_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.25])  # local crops' (DINO: 0.05 0.4)
    blur: bool = True  # false: no blur on any crop, whatever data.aug says (CIFAR recipes drop it)
    solarize: bool = True  # false: no solarisation on any crop
    aug: AugConfig = field(default_factory=AugConfig)
    train_per_class: int = bounded(0, 0)  # >0: the first N sorted files of each class (the protocol's subset)
    test_per_class: int = bounded(0, 0)
    # >0: evaluate on a validation split instead of test/: the next N files of each train/ class after
    # the first train_per_class (PROTOCOL.md: tune on train images outside the pre-training subset)
    val_per_class: int = bounded(0, 0)
    num_workers: int = bounded(0, 0)  # measured: on 2 cores a worker process slows training (see README)
    # true: the loader ships uint8 crops (4x fewer bytes through worker queues and to the GPU) and the
    # engine converts and normalises them on the device
    normalize_on_device: bool = False
    # device: the loader ships one uint8 image per sample and the engine draws all crops of the batch at
    # once on the training device (a few batched tensor ops; ssl_bench/data/device_aug.py) instead of per image in PIL
    augment: str = choice("loader", ["loader", "device"])
    # data.augment=device: the size the loader brings images to (None: global_size). Small images of
    # one size can ship at their own size (32 for CIFAR): at 224 px crops that is 49x fewer bytes per
    # image and no upsampling in the workers; the crops are resized on the device either way
    device_load_size: Optional[int] = bounded(None, 1)

    def check(self) -> None:
        for key in ("global_scale", "local_scale"):
            lo_hi = getattr(self, key)
            if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
                raise ConfigError(f"bad value for 'data.{key}': {lo_hi}; valid: [min, max] with 0 < min <= max <= 1")


@dataclass
class OptimConfig:
    """Optimiser, LR rule and schedules: linear warm-up + cosine LR, cosine weight decay. The schema
    defaults are DINO's AdamW (``main_dino.py``); each method's recipe sets its own."""

    epochs: int = bounded(4, 1)
    batch_size: int = bounded(128, 1)
    lr: float = bounded(5e-4, 0)  # the base LR; lr_scaling turns it into the run's peak LR
    # linear: lr * batch / 256 (Goyal et al. 2017; DINO, BYOL, MoCo, SwAV); sqrt: lr * sqrt(batch)
    # (SimCLR App. B.1 with LARS); none: lr as given
    lr_scaling: str = choice("linear", ["linear", "sqrt", "none"])
    min_lr: float = bounded(1e-6, 0)
    warmup_epochs: float = bounded(1.0, 0)
    # the LR of the warm-up's first step, absolute like min_lr (SwAV --start_warmup)
    warmup_start_lr: float = bounded(0.0, 0)
    weight_decay: float = bounded(0.04, 0)
    weight_decay_end: float = bounded(0.4, 0)
    # the arithmetic of the warm-up and cosine end points (LR, weight decay and the methods' own schedules
    # such as EMA momentum), one per reference (ssl_bench/schedules.py): endpoints (the suite's), linspace
    # (DINO, SwAV), continuous (MoCo v3); each paper recipe names its reference's
    schedule_convention: str = choice("endpoints", ["endpoints", "linspace", "continuous"])
    # step: LR and weight decay set every step; epoch: once per epoch (MoCo v2 adjust_learning_rate)
    schedule_unit: str = choice("step", ["step", "epoch"])
    # false: no weight decay (nor LARS adaptation) on biases and norm parameters (DINO, SimCLR, BYOL);
    # true: decay every parameter, as MoCo v2's SGD and MoCo v3's AdamW are built (model.parameters())
    decay_norm_and_bias: bool = False
    clip_grad: float = bounded(3.0, 0, note="0 disables")
    # global: one norm over all gradients; param: each parameter's gradient clipped to clip_grad on its
    # own (DINO ``utils.clip_gradients``)
    clip_mode: str = choice("global", ["global", "param"])
    optimizer: str = choice("adamw", ["adamw", "sgd", "lars"])
    momentum: float = bounded(0.9, 0, 1, hi_open=True)  # sgd, lars
    nesterov: bool = False  # sgd, lars
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    # lars: trust coefficient (eta) and solo-learn's clip_lr (the adapted LR never exceeds the scheduled one)
    lars_eta: float = bounded(0.001, 0, lo_open=True)
    lars_clip_lr: bool = False  # solo-learn's LARS exclude/clip_lr: min(adapted LR, scheduled LR)
    # lars: the trust ratio's denominator. sum: |g| + wd |w| (lightly, solo-learn, apex LARC); update:
    # |g + wd w|, the norm of the decayed gradient (moco-v3 moco/optimizer.py:27-35)
    lars_trust: str = choice("sum", ["sum", "update"])
    # lars: where the LR enters. after: p -= lr * buf, buf = m buf + d (PyTorch's SGD, lightly, solo-learn);
    # inside: p -= buf, buf = m buf + lr d, each step's LR kept in the buffer (SimCLR tf2/lars_optimizer.py
    # classic_momentum, the TF1 MomentumOptimizer's form); the two part whenever the LR changes
    lars_momentum_lr: str = choice("after", ["after", "inside"])
    # stop the run when a parameter's norm exceeds this (weights exploding while the loss stays finite);
    # 0 disables. Healthy runs stay orders of magnitude below (a ViT-S weight matrix: ~15)
    max_param_norm: float = bounded(1.0e4, 0, note="0 disables")

    def check(self) -> None:
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"bad value for 'optim.warmup_epochs': {self.warmup_epochs}; valid: <= optim.epochs ({self.epochs}),"
                " the warm-up is part of the run"
            )
        if self.min_lr > self.lr:
            raise ConfigError(
                f"bad value for 'optim.min_lr': {self.min_lr}; valid: <= optim.lr ({self.lr}), the LR the cosine "
                "decays from"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"bad value for 'optim.betas': {self.betas}; valid: two numbers in [0, 1)")


@dataclass
class EvalConfig:
    """Evaluation settings (k-NN follows DINO: weighted vote, T = 0.07)."""

    evals: list[str] = field(default_factory=lambda: ["knn"])  # evaluations after training: knn, linear, seg
    # evaluate on another labelled dataset than the one pre-trained on (its train split is the k-NN bank
    # and the probe's training set, its test split the queries): needed after unlabelled pre-training
    dataset: Optional[str] = None  # None: the pre-training dataset
    data_root: Optional[str] = None  # that dataset's folder (None: data.root)
    knn_k: list[int] = bounded([10, 20, 100, 200], 1, note="neighbours")
    knn_temperature: float = bounded(0.07, 0, lo_open=True, note="the vote's softmax temperature; DINO: 0.07")
    knn_every: int = bounded(0, 0)  # >0: also run k-NN every N epochs
    batch_size: int = bounded(256, 1)
    baseline: bool = True  # also evaluate the same backbone at random init (same seed)
    # test-time preprocessing of k-NN and linear features: resize the short side to size / crop_fraction,
    # centre-crop size. DINO eval_knn.py / eval_linear.py: Resize(256, bicubic) + CenterCrop(224), i.e.
    # crop_fraction 0.875 (the paper recipes); 1.0 with bilinear is a plain resize (CIFAR at 32 px: none)
    crop_fraction: float = bounded(1.0, 0, 1, lo_open=True, note="DINO: 0.875")
    interpolation: str = choice("bilinear", ["bilinear", "bicubic"])
    # linear probe: logistic regression on cached frozen features, C chosen on a held-out 10% of train
    linear_avgpool: bool = False  # ViT: concatenate the mean patch token to the CLS token (DINO's option)
    # ViT: >0 concatenates the (normed) CLS tokens of the last N blocks (DINO eval_linear.py n_last_blocks:
    # 4 for ViT-S, 1 for ViT-B); 0: the encoder's output
    linear_last_blocks: int = bounded(0, 0)
    linear_c_grid: list[float] = bounded([0.01, 0.1, 1.0, 10.0], 0, lo_open=True, note="inverse regularisations")
    # who solves the logistic regression: scikit-learn (CPU), torch's L-BFGS on the training device (same
    # objective), or auto: torch on a GPU, scikit-learn on the CPU
    linear_solver: str = choice("auto", ["auto", "sklearn", "torch"])
    linear_augmented: bool = False  # paper-grade path: SGD on random-resized-crop + flip inputs
    linear_epochs: int = bounded(10, 1)  # augmented path only
    linear_lr: float = bounded(0.01, 0, lo_open=True)  # augmented path only, per 256 images
    # segmentation: a folder of images/ + masks/ pairs (binary foreground) or "voc" (torchvision VOC 2012)
    seg_root: Optional[str] = None
    # images are resized to this (square, a multiple of the patch size); None: 14 patches a side for a
    # ViT (DINO's attention maps: 224 px at /16), 224 px otherwise
    seg_size: Optional[int] = bounded(None, 1)
    # attention Jaccard keeps the smallest patch set holding this attention mass (1: every patch)
    seg_mass: float = bounded(0.6, 0, 1, lo_open=True, hi_open=True, note="a fraction of the attention mass")
    # linear patch probe: first fraction of sorted pairs trains, rest tests
    seg_train_fraction: float = bounded(0.5, 0, 1, lo_open=True, hi_open=True)


@dataclass
class LogConfig:
    """Where training metrics go besides ``train.jsonl`` (one line per epoch)."""

    tensorboard: bool = False  # scalars per step and per epoch under <run_dir>/tensorboard (pip install tensorboard)
    every_steps: int = bounded(10, 1)  # per-step scalars every N steps (each costs a device-to-host copy of the loss)
    # Weights & Biases: the same scalars, the config, the final metrics as summary, under <run_dir>/wandb
    # (pip install wandb); offline: written for a later `wandb sync`, as solo-learn's wandb.offline
    wandb: bool = False
    wandb_project: str = "ssl-bench"  # the W&B project the run is logged under
    wandb_offline: bool = False  # write the W&B run locally (WANDB_MODE=offline) for a later `wandb sync`


@dataclass
class ClusterConfig:
    """SLURM resources for ``launcher=slurm`` (submitit). One process per GPU, or
    ``tasks_per_node`` processes per node on CPU-only nodes."""

    partition: Optional[str] = None  # sbatch --partition (None: the cluster's default)
    nodes: int = 1  # sbatch --nodes
    gpus_per_node: int = 0  # sbatch --gpus-per-node; one process per GPU
    tasks_per_node: int = 1  # CPU nodes: processes per node (GPU nodes: one per GPU)
    cpus_per_task: int = 1  # sbatch --cpus-per-task: loader workers and compute threads of each process
    mem: Optional[str] = None  # e.g. "32G" per node
    time: str = "01:00:00"  # [D-]HH:MM:SS or minutes
    account: Optional[str] = None  # sbatch --account
    qos: Optional[str] = None  # sbatch --qos
    constraint: Optional[str] = None  # sbatch --constraint, e.g. "volta32gb"
    exclude: Optional[str] = None  # sbatch --exclude: nodes not to run on
    comment: Optional[str] = None  # sbatch --comment
    extra: list[str] = field(default_factory=list)  # more sbatch flags as key=value, e.g. [reservation=abc]
    max_requeues: int = 3  # times a preempted or timed-out job is requeued (it resumes from its checkpoint)
    log_dir: Optional[str] = None  # default: <run_dir>/slurm

    def check(self) -> None:
        """Every value ends up on an ``#SBATCH`` line of a shell script: ``_validate`` refuses a newline or
        other control character in any string setting before this runs; extra keys must be sbatch
        long-option names."""
        for item in self.extra:
            key = item.partition("=")[0].lstrip("-")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
                raise ConfigError(
                    f"bad cluster.extra entry {item!r}: the key must be an sbatch option name "
                    "(letters, digits, '-', '_'), e.g. reservation=abc"
                )
        if self.nodes < 1 or self.tasks_per_node < 1 or self.cpus_per_task < 1 or self.gpus_per_node < 0:
            raise ConfigError(
                "bad cluster sizes: cluster.nodes, tasks_per_node and cpus_per_task must be >= 1, gpus_per_node >= 0"
            )


@dataclass
class RunConfig:
    """Everything one run needs; saved as ``config.yaml`` in the run folder."""

    method: Any = None  # the registered method's config dataclass
    backbone: Any = None  # the registered backbone's config dataclass
    dataset: str = "digits"  # a registered dataset (dataset=NAME); other than digits needs a named preset
    preset: Optional[str] = None  # the preset this config was built from (preset=NAME or a .yaml path)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = bounded(0, 0, 2**32 - 1, note="NumPy's seed range")
    # fp16: autocast to float16 with a gradient scaler (GPUs without bf16); bf16 needs no scaler
    precision: str = choice("fp32", ["fp32", "bf16", "fp16"])
    device: str = choice("auto", ["auto", "cpu", "cuda"])
    threads: int = bounded(0, 0)  # >0: torch.set_num_threads
    run_dir: Optional[str] = None  # default: a fresh folder under results_root
    results_root: str = "results/runs"  # where run folders are made (report and status read it)
    resume: str = choice("never", ["never", "auto"])
    checkpoint_every_steps: int = bounded(0, 0)  # >0: also checkpoint every N steps (resume mid-epoch)
    deterministic: bool = False  # torch.use_deterministic_algorithms(True, warn_only=True)
    compile: bool = False  # torch.compile every backbone (in place; checkpoints keep their keys)
    keep_cpu_memory: bool = True  # glibc: keep freed memory in the heap (no page faults per step); process-wide
    progress: bool = True  # tqdm bars for training, feature extraction and probes (false: epoch lines only)
    launcher: str = choice("local", ["local", "slurm"])
    nproc: int = bounded(1, 1)  # launcher=local: processes on this machine (DDP; gloo on CPU, NCCL on GPU)
    wait: bool = False  # launcher=slurm: block until the job ends, streaming its progress
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    log: LogConfig = field(default_factory=LogConfig)
    weights: Optional[str] = None  # set by `eval weights=FILE`: the run scores these weights, it trains nothing

    def check(self) -> None:
        patch = getattr(self.backbone, "patch_size", None)  # ViTs cut whole patches of every crop
        for key in ("global_size", "local_size"):
            size = getattr(self.data, key)
            if patch and size is not None and size % patch:
                raise ConfigError(
                    f"bad value for 'data.{key}': {size} with backbone.patch_size={patch}; valid: a multiple of "
                    "the patch size"
                )
        for key in ("data.root", "eval.data_root", "eval.seg_root", "results_root", "run_dir"):
            head, _, tail = key.rpartition(".")
            value = getattr(getattr(self, head) if head else self, tail)
            if isinstance(value, str) and value.startswith("~") and os.path.expanduser(value).startswith("~"):
                user = value[1:].split("/", 1)[0]
                raise ConfigError(
                    f"bad value for {key!r}: {value!r}: there is no user {user!r} on this machine; valid: a path "
                    "(~ or ~USER of an existing user)"
                )
        cores = os.cpu_count() or 1
        if self.launcher == "local" and self.nproc > cores:
            raise ConfigError(
                f"bad value for 'nproc': {self.nproc}; valid: 1 to {cores}, the CPU cores of this machine "
                "(launcher=local starts every process here)"
            )
        if self.launcher == "local" and self.optim.batch_size % self.nproc:
            raise ConfigError(
                f"bad value for 'optim.batch_size': {self.optim.batch_size} with nproc={self.nproc}; valid: a "
                "multiple of nproc (each process takes an equal share of the global batch)"
            )


def _range_meta(obj: Any, name: str) -> dict:
    """The range of field ``name``, from the nearest class that declares one: a subclass that only
    changes the default (``ViTTinyConfig.patch_size = 4``) keeps its base's range."""
    for cls in type(obj).__mro__:
        f = getattr(cls, "__dataclass_fields__", {}).get(name)
        if f is not None and "range" in f.metadata:
            return dict(f.metadata)
    return {}


def _validate(obj: Any, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        # paths and names reach submitit's batch script (--output, --error, the job name) and shells: a
        # newline would start a new line of the script, so no setting, wherever it comes from, holds one
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and CONTROL_CHARS.search(v):
                raise ConfigError(
                    f"bad value for {prefix + f.name!r}: {v!r} holds a newline or control character; valid: one "
                    "line of printable text"
                )
        meta = _range_meta(obj, f.name)
        if meta:
            _check_range(f"{prefix}{f.name}", value, meta["range"], meta["note"])
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"bad value for {prefix}{f.name!r}: {value!r}; valid: {', '.join(map(str, choices))}")
        if dataclasses.is_dataclass(value):
            _validate(value, f"{prefix}{f.name}.")
    check = getattr(obj, "check", None)
    if callable(check):
        check()


def build_config(overrides: list[str] | None = None, training: bool = True) -> RunConfig:
    """Resolve a RunConfig from CLI-style overrides (see module docstring). ``training``: the config trains,
    so a dataset other than ``digits`` needs a named preset (``eval weights=`` trains nothing)."""

    selectors, dotlist = parse_overrides(list(overrides or []))
    preset_name = selectors.get("preset", "default")
    shared, recipe = load_preset(preset_name, selectors.get("method") or "dino")
    if "method" in shared:
        raise ConfigError(
            f"preset {preset_name!r}: method settings belong in configs/recipes/<method>/"
            f"{preset_name}.yaml, not in the shared preset"
        )
    preset_method = recipe.pop("method", None) or {}
    if isinstance(preset_method, str):
        preset_method = {"name": preset_method}
    method_name = selectors.get("method") or preset_method.get("name") or "dino"
    if preset_method.get("name", method_name) != method_name:  # a user's file written for another method
        preset_method = {}
    backbone_name = selectors.get("backbone")
    for layer in (shared, recipe):
        b = layer.get("backbone")
        if isinstance(b, str):
            layer["backbone"] = b = {"name": b}
        if not backbone_name and isinstance(b, dict) and b.get("name"):
            backbone_name = b["name"]
    backbone_name = backbone_name or "vit_tiny"
    m_entry = METHODS.get(method_name)
    b_entry = BACKBONES.get(backbone_name)

    assert m_entry.config is not None and b_entry.config is not None  # registered with their config classes
    schema = OmegaConf.structured(
        RunConfig(
            method=m_entry.config(name=method_name), backbone=b_entry.config(name=backbone_name), preset=preset_name
        )
    )
    OmegaConf.set_struct(schema, True)
    layers: list[dict] = []
    for layer in (shared, recipe):  # shared preset, then the method's recipe for it
        layer = dict(layer)
        b = layer.pop("backbone", None)
        # A preset's backbone settings apply only to the backbone it names.
        if b and b.get("name", backbone_name) == backbone_name:
            layer["backbone"] = {k: v for k, v in b.items() if k != "name"}
        layers.append(layer)
    layers.append({"method": {k: v for k, v in preset_method.items() if k != "name"}})
    if "cluster" in selectors:
        layers.append({"cluster": load_cluster_preset(selectors["cluster"])})
    try:
        cfg = schema
        for layer in layers:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(layer))
        if dotlist:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
        run_cfg = to_run_config(cfg)
    except OmegaConfBaseException as err:
        raise friendly_error(err, schema) from None
    if run_cfg.dataset not in DATASETS:
        DATASETS.get(run_cfg.dataset)  # raises a UserError naming the valid datasets
    if training and "preset" not in selectors and run_cfg.dataset != "digits":
        # the default preset is the digits demo's recipe; another dataset silently trained with it
        raise ConfigError(
            f"dataset={run_cfg.dataset} needs a preset (the default one is the digits demo's recipe); valid: "
            f"{', '.join(preset_names())} or a path to a .yaml file (preset=default: the demo's recipe on this data)"
        )
    for name in run_cfg.eval.evals:
        if not isinstance(name, str):
            valid = ", ".join(EVALS.names())
            raise ConfigError(
                f"bad value for 'eval.evals': {run_cfg.eval.evals!r}; valid: a list of names from {valid}"
            )
        EVALS.get(name)  # raises a UserError naming the valid evals
    _validate(run_cfg)
    return run_cfg


def resolve(cfg: RunConfig) -> RunConfig:
    """Fill the config's derived values (crop sizes, method's local-crop count) so the saved config is complete."""
    data = cfg.data
    gsize = data.global_size or cfg.backbone.img_size
    n_local = data.n_local if data.n_local is not None else getattr(cfg.method, "n_local", 0)
    data = dataclasses.replace(
        data, global_size=gsize, local_size=data.local_size or max(gsize // 2, 1), n_local=n_local
    )
    return dataclasses.replace(cfg, data=data)


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def load_config(path: str | Path) -> RunConfig:
    """Load a saved ``config.yaml`` back into typed dataclasses (for eval/resume)."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("method", "backbone")):
        raise ConfigError(f"{str(path)!r} is not a run's config (no method and backbone sections)")
    if not all(isinstance(data[k].get("name"), str) for k in ("method", "backbone")):
        raise ConfigError(f"{str(path)!r} is not a run's config (method.name and backbone.name missing)")
    method = data.pop("method")
    backbone = data.pop("backbone")
    over = [f"method={method['name']}", f"backbone={backbone['name']}"]
    flat = OmegaConf.to_container(OmegaConf.create({"method": method, "backbone": backbone, **data}))
    data_cfg = OmegaConf.create(flat)
    schema = OmegaConf.structured(build_config(over))
    try:
        return to_run_config(OmegaConf.merge(schema, data_cfg))
    except OmegaConfBaseException as err:  # an unknown key or a wrong type in a received config.yaml
        raise ConfigError(f"{str(path)!r}: {friendly_error(err, schema)}") from None


def to_run_config(node: Any) -> RunConfig:
    """The typed RunConfig of a structured OmegaConf node (``to_object`` is typed as returning any container)."""
    obj = OmegaConf.to_object(node)
    assert isinstance(obj, RunConfig)
    return obj
