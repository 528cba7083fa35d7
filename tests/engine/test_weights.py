"""Backbones out of the suite (export -> timm / torchvision) and into it (eval weights=FILE)."""

import fractions
import json
import subprocess
import sys

import pytest
import timm
import timm.data
import torch
import torchvision

from ssl_bench.__main__ import main
from ssl_bench.config import load_config
from ssl_bench.data.datasets import run_datasets
from ssl_bench.engine.checkpoint import load_checkpoint
from ssl_bench.engine.train import build_method
from ssl_bench.engine.weights import build_exported, read_weights
from ssl_bench.results import RunDir, load_runs
from tests.conftest import TINY

RESNET = [
    "backbone=resnet18",
    "backbone.img_size=16",
    "data.global_size=16",
    "data.n_local=0",
    "data.num_workers=0",
    "optim.batch_size=16",
    "progress=false",
]


def _train(root, method, extra):
    assert (
        main(
            [
                "run",
                f"method={method}",
                "optim.epochs=1",
                "data.train_per_class=8",
                "data.test_per_class=4",
                "evals=knn",
                *extra,
                f"results_root={root}",
            ]
        )
        == 0
    )
    return next(p for p in root.iterdir() if p.is_dir())


def _suite_encoder(run_dir):
    method = build_method(load_config(run_dir / "config.yaml"))
    load_checkpoint(RunDir(run_dir).checkpoint, method, None)
    return method.encoder().eval()


@pytest.fixture(scope="module")
def dino_run(tmp_path_factory):
    return _train(
        tmp_path_factory.mktemp("dino") / "runs",
        "dino",
        [*TINY, "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16", "data.n_local=0"],
    )


def test_export_timm_round_trips_the_dino_teacher(dino_run, tmp_path):
    out = tmp_path / "dino_vit.pt"
    assert main(["export", f"run={dino_run}", f"out={out}"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["method"] == "dino" and meta["encoder"] == "DINO.encoder()"
    state = torch.load(out, weights_only=True)  # a plain state dict
    model = timm.create_model(**meta["timm_create_model"])
    model.load_state_dict(state)
    model.eval()
    x = torch.randn(3, 3, 16, 16)
    enc = _suite_encoder(dino_run)
    with torch.no_grad():
        assert torch.equal(model(x), enc(x))
        # DINO releases the teacher: the exported weights are the teacher's, not the student's
        student = build_method(load_config(dino_run / "config.yaml"))
        load_checkpoint(RunDir(dino_run).checkpoint, student, None)
        assert not torch.equal(student.student.backbone.eval()(x), enc(x))
    st = read_weights(out.with_suffix(".safetensors"))
    assert st.keys() == state.keys() and all(torch.equal(st[k], state[k]) for k in state)
    # timm's own pretrained loading, given the export's pretrained_cfg: the weights and the run's
    # preprocessing (input size, the normalisation it trained with), not timm's 224 px / 0.5 defaults
    overlay = {**meta["timm_pretrained_cfg_overlay"], "file": str(out.with_suffix(".safetensors"))}
    hub = timm.create_model(**{**meta["timm_create_model"], "pretrained": True, "pretrained_cfg_overlay": overlay})
    with torch.no_grad():
        assert torch.equal(hub.eval()(x), enc(x))
    data_cfg = timm.data.resolve_model_data_config(hub)
    splits = run_datasets(load_config(dino_run / "config.yaml"))
    assert tuple(data_cfg["input_size"]) == (3, 16, 16)
    assert data_cfg["mean"] == pytest.approx(splits.mean) and data_cfg["std"] == pytest.approx(splits.std)


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("simclr") / "runs", "simclr", [*RESNET, "backbone.stem_padding=2"])


def test_export_timm_cifar_stem_resnet_loads_by_name(resnet_run, tmp_path):
    """A CIFAR-stem ResNet loads in timm by its registered name (resnet18_cifar), in a fresh process that
    imports nothing of the suite but that registration: no code pasted, the run's preprocessing with it."""
    out = tmp_path / "r18.pt"
    assert main(["export", f"run={resnet_run}", f"out={out}"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["timm_create_model"]["model_name"] == "resnet18_cifar"
    assert meta["timm_import"] == "ssl_bench.timm_models" and "then_cifar_stem" not in meta
    x = torch.randn(2, 3, 16, 16)
    torch.save(x, tmp_path / "x.pt")
    script = f"""
import importlib, json, sys
import timm, timm.data, torch
meta = json.load(open({str(out.with_suffix(".json"))!r}))
importlib.import_module(meta["timm_import"])
assert not any(m.startswith("ssl_bench.") and m != "ssl_bench.timm_models" for m in sys.modules), sorted(sys.modules)
overlay = dict(meta["timm_pretrained_cfg_overlay"], file={str(out.with_suffix(".safetensors"))!r})
model = timm.create_model(**dict(meta["timm_create_model"], pretrained=True, pretrained_cfg_overlay=overlay))
with torch.no_grad():
    torch.save(model.eval()(torch.load({str(tmp_path / "x.pt")!r})), {str(tmp_path / "y.pt")!r})
print(json.dumps(timm.data.resolve_model_data_config(model)))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data_cfg = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data_cfg["input_size"] == [3, 16, 16]
    assert data_cfg["mean"] == pytest.approx(run_datasets(load_config(resnet_run / "config.yaml")).mean)
    with torch.no_grad():  # the suite runs ResNets channels-last: the same numbers up to summation order
        suite = _suite_encoder(resnet_run)(x)
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), suite, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(build_exported(out).eval()(x), suite, rtol=1e-5, atol=1e-5)


def test_export_torchvision_resnet_with_cifar_stem(resnet_run, tmp_path):
    run_dir = resnet_run
    out = tmp_path / "r18.pt"
    assert main(["export", f"run={run_dir}", f"out={out}", "format=torchvision"]) == 0
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 2, bias=False)  # as the .json says: the CIFAR stem
    model.maxpool = torch.nn.Identity()
    model.load_state_dict(torch.load(out, weights_only=True))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), _suite_encoder(run_dir)(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(build_exported(out).eval()(x), model(x))


def test_eval_weights_scores_the_file_like_the_run_it_came_from(dino_run, tmp_path, capsys):
    """The exported teacher, scored with `eval weights=`, gets the run's own k-NN number (same encoder, same
    protocol), beside its random-init row; `report` shows it as its own row."""
    out = tmp_path / "enc.pt"
    assert main(["export", f"run={dino_run}", f"out={out}"]) == 0
    root = tmp_path / "scored"
    assert (
        main(
            [
                "eval",
                f"weights={out}",
                "evals=knn",
                "data.train_per_class=8",
                "data.test_per_class=4",
                "data.num_workers=0",
                "progress=false",
                f"results_root={root}",
            ]
        )
        == 0
    )
    scored = {(r["eval"], r["metric"]): r["value"] for r in RunDir(next(root.iterdir())).read_metrics()}
    own = {(r["eval"], r["metric"]): r["value"] for r in RunDir(dino_run).read_metrics()}
    assert scored[("knn", "top1")] == own[("knn", "top1")]
    assert scored[("knn@init", "top1")] == own[("knn@init", "top1")]
    # the row is the exported run's: its method, epochs and training settings, not the default preset's
    df = load_runs(root)
    trained = load_runs(dino_run.parent)
    assert set(df["method"]) == {"dino"} and set(df["epochs"]) == {1} and set(df["weights"]) == {"enc.pt"}
    for key in ("method.out_dim", "method.hidden_dim", "optim.lr", "data.n_local", "data.root"):
        assert set(df[key]) == set(trained[key]), key
    # a backbone key on the command line layers over the export's, it does not discard them
    assert (
        main(
            [
                "eval",
                f"weights={out}",
                "backbone.img_size=16",
                "evals=knn",
                "eval.baseline=false",
                "data.train_per_class=8",
                "data.test_per_class=4",
                "progress=false",
                f"results_root={root}",
            ]
        )
        == 0
    )


def test_weights_errors_are_one_line(dino_run, tmp_path, capsys):
    pickled = tmp_path / "obj.pt"
    torch.save({"x": torch.zeros(1), "obj": fractions.Fraction(1, 3)}, pickled)  # an object weights_only refuses
    assert main(["eval", f"weights={pickled}", "backbone=vit_tiny", f"results_root={tmp_path / 'r'}"]) == 2
    assert "holds Python objects that weights_only=True refuses" in capsys.readouterr().err
    out = tmp_path / "enc.pt"
    assert main(["export", f"run={dino_run}", f"out={out}"]) == 0
    assert main(["eval", f"weights={out}", "backbone=resnet18", f"results_root={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "fit no known checkpoint layout for backbone=resnet18" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # nothing half-written
    assert main(["export", f"run={dino_run}", f"out={tmp_path / 'x.pt'}", "format=torchvision"]) == 2
    assert "format=torchvision holds ResNets" in capsys.readouterr().err
    assert main(["export", f"run={dino_run}"]) == 2
