"""Released checkpoints of DINO, MoCo v2/v3, SwAV, solo-learn, timm and torchvision, each written by the test
in its project's layout (backbone under the project's prefix, heads and second networks beside it), load into
the suite backbone with the backbone's tensors and features, and nothing of the heads."""

import argparse
import fractions

import pytest
import torch
import torchvision

from ssl_bench.__main__ import main
from ssl_bench.backbones import build_backbone
from ssl_bench.config import build_config
from ssl_bench.engine.weights import load_into
from ssl_bench.errors import UserError
from ssl_bench.results import RunDir

VIT = ["backbone=vit_tiny", "backbone.img_size=16", "backbone.patch_size=4", "backbone.depth=1"]
RESNET = ["backbone=resnet18", "backbone.img_size=16"]


def _backbone(over, seed):
    torch.manual_seed(seed)
    return build_backbone(build_config(over).backbone).eval()


def _prefixed(state, prefix):
    return {prefix + k: v.clone() for k, v in state.items()}


def _other(state):  # a second network of the same shape (student, momentum / key encoder)
    return {k: torch.randn_like(v) if v.is_floating_point() else v.clone() for k, v in state.items()}


def _head(prefix, dim=8):
    return {f"{prefix}0.weight": torch.randn(dim, dim), f"{prefix}0.bias": torch.randn(dim)}


def dino_ddp(sd):  # main_dino.py saves teacher.state_dict() of the DDP-wrapped MultiCropWrapper (ResNets)
    return {
        "teacher": {**_prefixed(sd, "module.backbone."), **_head("module.head.mlp.")},
        "student": {**_prefixed(_other(sd), "module.backbone.")},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536),
        "dino_loss": {"center": torch.zeros(1, 8)},
    }


def dino(sd):  # ViTs without BatchNorm: the teacher is not DDP-wrapped
    return {"teacher": {**_prefixed(sd, "backbone."), **_head("head.mlp.")}, "epoch": 1}


def moco_v3(sd):
    return {
        "epoch": 300,
        "arch": "vit_small",
        "state_dict": {
            **_prefixed(sd, "module.base_encoder."),
            **_head("module.base_encoder.head."),
            **_prefixed(_other(sd), "module.momentum_encoder."),
            **_head("module.predictor."),
        },
        "optimizer": {"state": {}, "param_groups": []},
    }


def moco_v2(sd):
    return {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": {
            **_prefixed(sd, "module.encoder_q."),
            **_head("module.encoder_q.fc."),
            **_prefixed(_other(sd), "module.encoder_k."),
            "module.queue": torch.randn(8, 16),
            "module.queue_ptr": torch.zeros(1, dtype=torch.long),
        },
    }


def swav(sd):  # swav_800ep_pretrain.pth.tar: the DDP state dict itself
    heads = {**_head("module.projection_head."), "module.prototypes.weight": torch.randn(30, 8)}
    return {**_prefixed(sd, "module."), **heads}


def solo_learn(sd):  # a Lightning checkpoint
    return {
        "epoch": 999,
        "global_step": 5,
        "state_dict": {
            **_prefixed(sd, "backbone."),
            **_prefixed(sd, "momentum_backbone."),
            **_head("projector."),
            "classifier.weight": torch.randn(10, 8),
            "classifier.bias": torch.randn(10),
        },
        "hyper_parameters": {"cfg": {"method": "byol"}},
    }


def timm_vit(sd):
    return {**sd, "head.weight": torch.randn(1000, 8), "head.bias": torch.randn(1000)}


def torchvision_resnet(sd):
    return {**sd, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}


CASES = [
    ("dino_ddp", dino_ddp, VIT, "DINO"),
    ("dino", dino, VIT, "DINO"),
    ("moco_v3", moco_v3, VIT, "MoCo v3"),
    ("moco_v2", moco_v2, RESNET, "MoCo v2"),
    ("swav", swav, RESNET, "SwAV"),
    ("solo_learn", solo_learn, RESNET, "solo-learn"),
    ("timm", timm_vit, VIT, "timm"),
    ("torchvision", torchvision_resnet, RESNET, "timm / torchvision"),
]


@pytest.mark.parametrize("name,layout,over,expect", CASES, ids=[c[0] for c in CASES])
def test_released_layout_loads_the_backbone(name, layout, over, expect, tmp_path):
    source = _backbone(over, seed=0)
    path = tmp_path / f"{name}.pth"
    torch.save(layout(source.model.state_dict()), path)
    target = _backbone(over, seed=1)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert not torch.equal(target(x), source(x))
        found = load_into(target, _load(path), str(path))
        assert found.startswith(expect)
        assert torch.equal(target(x), source(x))


def _load(path):
    from ssl_bench.engine.released import load_file

    return load_file(path)


def test_real_torchvision_names_load_into_the_timm_resnet(tmp_path):
    """torchvision's own resnet18 (ImageNet stem) and the suite's timm resnet18 share parameter names."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    target = _backbone(["backbone=resnet18", "backbone.cifar_stem=false", "backbone.img_size=64"], seed=1)
    load_into(target, _load(path), str(path))
    x = torch.randn(2, 3, 64, 64)
    tv.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(target(x), tv(x), rtol=1e-5, atol=1e-5)


def test_a_released_vit_at_another_resolution_gets_its_position_grid_resampled(tmp_path):
    source = _backbone([*VIT, "backbone.img_size=32"], seed=0)
    path = tmp_path / "vit32.pth"
    torch.save(dino(source.model.state_dict()), path)
    target = _backbone(VIT, seed=1)
    load_into(target, _load(path), str(path))
    assert target.model.pos_embed.shape == (1, 1 + 16, source.embed_dim)
    assert torch.equal(target.model.blocks[0].attn.qkv.weight, source.model.blocks[0].attn.qkv.weight)


def test_unknown_layouts_and_suite_checkpoints_get_one_line_errors(tmp_path, capsys):
    sd = _backbone(VIT, seed=0).model.state_dict()
    odd = tmp_path / "odd.pth"
    torch.save({"weights": _prefixed(sd, "net.trunk.")}, odd)
    with pytest.raises(UserError, match=r"fit no known checkpoint layout for backbone=vit_tiny.*weights/.*known: "):
        load_into(_backbone(VIT, seed=1), _load(odd), str(odd))
    objects = tmp_path / "objects.pth"
    torch.save({"state_dict": sd, "hp": fractions.Fraction(1, 3)}, objects)
    with pytest.raises(UserError, match=r"holds Python objects that weights_only=True refuses.*save its state dict"):
        _load(objects)
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(UserError, match="is an empty file"):
        _load(empty)
    # a suite training checkpoint points to eval run=
    root = tmp_path / "runs"
    args = [
        "run",
        *VIT,
        "method=simclr",
        "optim.epochs=1",
        "data.train_per_class=4",
        "data.test_per_class=2",
        "data.global_size=16",
        "data.n_local=0",
        "data.num_workers=0",
        "optim.batch_size=8",
        "evals=knn",
        "eval.baseline=false",
        "progress=false",
        f"results_root={root}",
    ]
    assert main(args) == 0
    ckpt = RunDir(next(root.iterdir())).checkpoint
    assert main(["eval", f"weights={ckpt}", *VIT, f"results_root={tmp_path / 'scored'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is an ssl-bench training checkpoint: score its run with `eval run=" in err and "\n" not in err
    assert not (tmp_path / "scored").exists()


def _hub_cache(tmp_path, monkeypatch, repo, state):
    """A Hugging Face cache holding ``repo``'s ``model.safetensors``, read offline as after a first download."""
    import huggingface_hub.constants as hub
    from safetensors.torch import save_file

    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("a" * 40)
    save_file({k: v.contiguous() for k, v in state.items()}, snap / "model.safetensors")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


def test_timm_hub_weights_are_scored_through_timm_offline(tmp_path, monkeypatch, capsys):
    """``weights=timm:NAME`` goes through timm's own pretrained loading (here from a local HF cache): the
    suite backbone gets the architecture and input size of the weights' pretrained_cfg, the user's keys
    over them, and the run records the name, layout and pretrained_cfg."""
    import json

    import timm

    torch.manual_seed(0)
    released = timm.create_model("resnet18", num_classes=0).eval()
    _hub_cache(tmp_path, monkeypatch, "timm/resnet18.a1_in1k", released.state_dict())
    from ssl_bench.engine.released import from_timm

    state, over, meta = from_timm("timm:resnet18.a1_in1k")
    assert over == ["backbone=resnet18", "backbone.img_size=224", "backbone.cifar_stem=false"]
    assert meta["pretrained_cfg"]["hf_hub_id"] == "timm/resnet18.a1_in1k"
    target = _backbone([*over, "backbone.img_size=32"], seed=1)
    assert load_into(target, state, "timm:resnet18.a1_in1k").startswith("timm")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), released(x), rtol=1e-5, atol=1e-5)
    root = tmp_path / "scored"
    args = ["eval", "weights=timm:resnet18.a1_in1k", "backbone.img_size=32", "evals=knn", "eval.baseline=false"]
    args += ["data.train_per_class=4", "data.test_per_class=2", "data.num_workers=0", "progress=false"]
    assert main([*args, f"results_root={root}"]) == 0
    run = RunDir(next(root.iterdir()))
    source = json.loads((run.path / "weights.json").read_text())
    assert source["file"] == "timm:resnet18.a1_in1k" and source["timm"] == "resnet18.a1_in1k"
    assert source["pretrained_cfg"]["mean"] == list(released.pretrained_cfg["mean"])
    assert {(r["eval"], r["metric"]) for r in run.read_metrics()} >= {("knn", "top1")}
    # a name that is neither cached nor reachable: one line, nothing written
    assert main(["eval", "weights=timm:resnet50.a1_in1k", f"results_root={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "timm could not load these pretrained weights" in err and "\n" not in err
    assert not (tmp_path / "none").exists()
