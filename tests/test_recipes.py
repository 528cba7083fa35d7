"""Recipe parity: every method's `paper` and `cifar10` recipes resolve to the values of the paper or
reference code they cite (configs/recipes/*/*.yaml). A drift in a YAML file, a schema default or the
preset merge fails here. The pinned values are written out again on purpose: the YAML's citations
are the source, this table the check."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ssl_bench.config import build_config, preset_names
from ssl_bench.engine.optim import peak_lr
from ssl_bench.engine.train import resolve

DINO_POLICY = {
    "jitter": [0.4, 0.4, 0.2, 0.1],
    "grey_p": 0.2,
    "global1": (1.0, 0.0),
    "global2": (0.1, 0.2),
    "local": (0.5, 0.0),
}
SIMCLR_POLICY = {"jitter": [0.8, 0.8, 0.8, 0.2], "grey_p": 0.2, "global1": (0.5, 0.0), "global2": (0.5, 0.0)}
MOCO2_POLICY = {"jitter": [0.4, 0.4, 0.4, 0.1], "grey_p": 0.2, "global1": (0.5, 0.0), "global2": (0.5, 0.0)}
ASYM_CIFAR = {"jitter": [0.4, 0.4, 0.2, 0.1], "global1": (0.0, 0.0), "global2": (0.0, 0.2)}

# (method, preset) -> {dotted key: value}; "policy" entries check data.aug
PINNED = {
    ("dino", "paper"): {
        "backbone.name": "vit_small",
        "backbone.patch_size": 16,
        "backbone.img_size": 224,
        "backbone.drop_path_rate": 0.1,
        "backbone.target_drop_path_rate": 0.0,
        "data.global_size": 224,
        "data.local_size": 96,
        "data.n_local": 8,
        "data.global_scale": [0.4, 1.0],
        "data.local_scale": [0.05, 0.4],
        "method.out_dim": 65536,
        "method.teacher_temp": 0.07,
        "method.warmup_teacher_temp": 0.04,
        "method.warmup_teacher_temp_epochs": 30,
        "method.student_temp": 0.1,
        "method.center_momentum": 0.9,
        "method.momentum_teacher": 0.996,
        "method.norm_last_layer": False,
        "method.freeze_last_layer": 1,
        "optim.optimizer": "adamw",
        "optim.lr": 5e-4,
        "optim.lr_scaling": "linear",
        "optim.batch_size": 1024,
        "optim.epochs": 300,
        "optim.warmup_epochs": 10,
        "optim.min_lr": 1e-6,
        "optim.weight_decay": 0.04,
        "optim.weight_decay_end": 0.4,
        "optim.clip_grad": 3.0,
        "optim.clip_mode": "param",
        "policy": DINO_POLICY,
    },
    ("simclr", "paper"): {
        "backbone.name": "resnet50",
        "backbone.cifar_stem": False,
        "data.global_size": 224,
        "data.n_local": 0,
        "data.global_scale": [0.08, 1.0],
        "method.temperature": 0.1,
        "method.out_dim": 128,
        "method.hidden_dim": 2048,
        "method.loss_reduction": "sum",
        "optim.optimizer": "lars",
        "optim.lr": 0.3,
        "optim.lr_scaling": "linear",
        "optim.batch_size": 4096,
        "optim.warmup_epochs": 10,
        "optim.weight_decay": 1e-6,
        "optim.lars_eta": 0.001,
        "optim.clip_grad": 0.0,
        "policy": SIMCLR_POLICY,
    },
    ("byol", "paper"): {
        "backbone.name": "resnet50",
        "data.global_scale": [0.08, 1.0],
        "method.hidden_dim": 4096,
        "method.out_dim": 256,
        "method.momentum": 0.996,
        "method.momentum_end": 1.0,
        "method.loss_reduction": "sum",
        "optim.optimizer": "lars",
        "optim.lr": 0.2,
        "optim.batch_size": 4096,
        "optim.weight_decay": 1.5e-6,
        "optim.epochs": 1000,
        "optim.warmup_epochs": 10,
        "optim.clip_grad": 0.0,
        "policy": DINO_POLICY,
    },
    ("moco", "paper"): {
        "backbone.name": "resnet50",
        "data.global_scale": [0.2, 1.0],
        "method.version": 2,
        "method.queue_size": 65536,
        "method.momentum": 0.999,
        "method.temperature": 0.2,
        "method.out_dim": 128,
        "method.symmetric": False,
        "method.shuffle_bn": True,
        "optim.optimizer": "sgd",
        "optim.lr": 0.03,
        "optim.batch_size": 256,
        "optim.epochs": 200,
        "optim.weight_decay": 1e-4,
        "optim.momentum": 0.9,
        "optim.warmup_epochs": 0,
        "optim.clip_grad": 0.0,
        "policy": MOCO2_POLICY,
    },
    ("moco_v3", "paper"): {
        "backbone.name": "vit_small",
        "backbone.num_heads": 12,
        "backbone.drop_path_rate": 0.0,
        "method.version": 3,
        "method.temperature": 0.2,
        "method.proj_layers": 3,
        "method.hidden_dim": 4096,
        "method.out_dim": 256,
        "method.momentum": 0.99,
        "method.momentum_end": 1.0,
        "method.vit_frozen_patch_embed": True,
        "method.vit_sincos_pos_embed": True,
        "optim.optimizer": "adamw",
        "optim.lr": 1.5e-4,
        "optim.weight_decay": 0.1,
        "optim.warmup_epochs": 40,
        "optim.epochs": 300,
        "data.global_scale": [0.08, 1.0],
        "policy": DINO_POLICY,
    },
    ("moco_v3", "paper-resnet50"): {
        "backbone.name": "resnet50",
        "method.temperature": 1.0,
        "method.proj_layers": 2,
        "optim.optimizer": "lars",
        "optim.lr": 0.6,
        "optim.batch_size": 4096,
        "optim.weight_decay": 1e-6,
        "optim.epochs": 100,
        "data.global_scale": [0.2, 1.0],  # CONFIG.md:15 --crop-min=.2
        # the shared paper layer: ImageNet-style data and the paper evaluation protocol
        "dataset": "imagefolder",
        "eval.crop_fraction": 0.875,
        "eval.interpolation": "bicubic",
        "eval.linear_last_blocks": 4,
        "eval.linear_augmented": True,
    },
    ("swav", "paper"): {
        "backbone.name": "resnet50",
        "data.global_size": 224,
        "data.local_size": 96,
        "data.n_local": 6,
        "data.global_scale": [0.14, 1.0],
        "data.local_scale": [0.05, 0.14],
        "method.n_prototypes": 3000,
        "method.temperature": 0.1,
        "method.sinkhorn_epsilon": 0.05,
        "method.sinkhorn_iterations": 3,
        "optim.optimizer": "lars",
        "optim.batch_size": 4096,
        "optim.min_lr": 0.0048,
        "optim.warmup_start_lr": 0.3,  # swav_800ep_pretrain.sh:46 --start_warmup
        "optim.weight_decay": 1e-6,
        "optim.epochs": 800,
        "policy": {**SIMCLR_POLICY, "local": (0.5, 0.0)},
    },
    ("dino", "cifar10"): {
        "backbone.name": "resnet18",
        "backbone.cifar_stem": True,
        "data.global_size": 32,
        "data.n_local": 0,
        "method.out_dim": 4096,
        "method.momentum_teacher": 0.9995,
        "method.teacher_temp": 0.07,
        "optim.optimizer": "lars",
        "optim.lr": 0.3,
        "optim.lars_eta": 0.02,
        "optim.lars_clip_lr": True,
        "optim.weight_decay": 1e-6,
        "optim.batch_size": 256,
        "optim.epochs": 1000,
        "optim.clip_grad": 0.0,
        "policy": ASYM_CIFAR,
    },
    ("simclr", "cifar10"): {
        "backbone.name": "resnet18",
        "backbone.stem_padding": 2,  # solo/methods/base.py:200-202
        "method.projector_bn": False,  # solo/methods/simclr.py:48-52
        "method.temperature": 0.2,
        "method.out_dim": 256,
        "optim.optimizer": "lars",
        "optim.lr": 0.4,
        "optim.weight_decay": 1e-4,
        "policy": SIMCLR_POLICY,
    },
    ("byol", "cifar10"): {
        "method.momentum": 0.99,
        "method.hidden_dim": 4096,
        "optim.optimizer": "lars",
        "optim.lr": 1.0,
        "optim.weight_decay": 1e-5,
        "policy": ASYM_CIFAR,
    },
    ("moco", "cifar10"): {
        "method.queue_size": 32768,
        "method.symmetric": True,
        "method.momentum": 0.99,
        "method.momentum_end": 0.999,
        "optim.optimizer": "sgd",
        "optim.lr": 0.3,
        "optim.weight_decay": 1e-4,
        "optim.decay_norm_and_bias": True,  # solo/methods/base.py:280-281,342
        "policy": MOCO2_POLICY,
    },
    ("moco_v3", "cifar10"): {
        "method.temperature": 0.2,
        "method.proj_layers": 2,
        "optim.optimizer": "lars",
        "optim.lr": 0.3,
        "optim.weight_decay": 1e-6,
        "policy": ASYM_CIFAR,
    },
    ("swav", "cifar10"): {
        "method.queue_size": 3840,
        "method.queue_start_epoch": 50,
        "method.freeze_prototypes_epochs": 2,
        "method.n_prototypes": 3000,
        "data.n_local": 0,
        "optim.optimizer": "lars",
        "optim.lr": 0.6,
        "policy": SIMCLR_POLICY,
    },
}


def _get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("method,preset", sorted(PINNED))
def test_recipe_matches_its_references(method, preset):
    cfg = resolve(build_config([f"method={method}", f"preset={preset}"]))
    for key, want in PINNED[(method, preset)].items():
        if key == "policy":
            aug = cfg.data.aug
            for k, v in want.items():
                got = (
                    (getattr(aug, k).blur_p, getattr(aug, k).solarize_p)
                    if k in ("global1", "global2", "local")
                    else getattr(aug, k)
                )
                assert got == pytest.approx(v), f"{method} {preset}: data.aug.{k} = {got}, reference {v}"
        else:
            got = _get(cfg, key)
            assert got == (pytest.approx(want) if isinstance(want, (float, list)) else want), (
                f"{method} {preset}: {key} = {got!r}, reference {want!r}"
            )


def test_every_method_has_paper_and_cifar10_recipes():
    from ssl_bench.registry import METHODS

    for name in METHODS.names():
        for preset in ("paper", "cifar10", "default", "cifar10-cpu"):
            build_config([f"method={name}", f"preset={preset}"])  # raises if the recipe is missing or broken
    assert {"paper", "cifar10", "default", "cifar10-cpu", "paper-resnet50"} <= set(preset_names())


def test_recipe_values_carry_a_source():
    """Every value line of the paper and cifar10 recipes has a comment, or sits under a commented block."""
    from importlib import resources

    root = resources.files("ssl_bench").joinpath("configs", "recipes")
    for method in root.iterdir():
        for name in ("paper.yaml", "cifar10.yaml"):
            text = method.joinpath(name).read_text()
            assert text.lstrip().startswith("#"), f"{method.name}/{name} does not say where it comes from"
            yaml.safe_load(text)


def test_cifar10_recipes_scale_the_lr_as_solo_learn():
    """solo/args/pretrain.py:153-154 scales optimizer.lr by batch x devices / 256: at the scripts' batch 256
    the LR is as written, and it follows the batch when that changes."""
    for method in ("simclr", "byol", "moco", "moco_v3", "swav", "dino"):
        o = build_config([f"method={method}", "preset=cifar10"]).optim
        assert peak_lr(o) == pytest.approx(o.lr)
        o = build_config([f"method={method}", "preset=cifar10", "optim.batch_size=512"]).optim
        assert peak_lr(o) == pytest.approx(2 * o.lr)


def test_lr_scaling_rules():
    o = build_config(["method=simclr", "preset=paper"]).optim
    assert peak_lr(o) == pytest.approx(0.3 * 4096 / 256)
    o = build_config(["method=simclr", "preset=paper", "optim.lr_scaling=sqrt", "optim.lr=0.075"]).optim
    assert peak_lr(o) == pytest.approx(0.075 * 64)
    o = build_config(["method=dino", "preset=cifar10"]).optim
    assert peak_lr(o) == pytest.approx(0.3)  # solo-learn: as given


def test_unknown_recipe_names_the_recipes_of_the_method():
    from ssl_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method 'dino' has no recipe for preset 'paper-resnet50'.*paper"):
        build_config(["method=dino", "preset=paper-resnet50"])


def test_config_command_prints_the_resolved_recipe():
    out = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "config", "method=simclr", "preset=paper"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["optim"]["optimizer"] == "lars" and cfg["method"]["temperature"] == 0.1
    assert cfg["data"]["aug"]["jitter"] == [0.8, 0.8, 0.8, 0.2] and cfg["data"]["global_scale"] == [0.08, 1.0]
    out = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "config", "method=dino", "preset=paper", "optim.lrr=1"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "optim.lr" in out.stderr and not out.stdout
