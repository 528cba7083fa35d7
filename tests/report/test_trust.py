"""Every number in a table or figure is the number its label says: no pooling of other data folders as
seeds, no evaluation on other data written over a run's own, figures grouped as the tables are."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from ssl_bench.__main__ import main
from ssl_bench.report import plots
from ssl_bench.report.tables import summarise
from ssl_bench.results import RunDir, load_runs, load_train_logs
from tests.conftest import TINY, make_image_folder

RUN = [*TINY, "method=simclr", "preset=default", "dataset=imagefolder", "optim.epochs=1", "evals=knn", "eval.knn_k=[5]"]


def _train(root, data, seed):
    assert main(["run", f"data.root={data}", f"seed={seed}", f"results_root={root}", *RUN]) == 0
    return max(root.iterdir(), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """Two folders both named ``data`` with other images, and a copy of the first elsewhere."""
    base = tmp_path_factory.mktemp("trees")
    a = make_image_folder(base / "a" / "data", classes=2, seed=0)
    b = make_image_folder(base / "b" / "data", classes=4, seed=1)
    shutil.copytree(a, base / "c" / "data")
    return a, b, base / "c" / "data"


@pytest.fixture(scope="module")
def runs(trees, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "runs"
    a, b, copy = trees
    return root, [_train(root, a, 0), _train(root, b, 1), _train(root, copy, 2)]


def test_runs_on_other_data_folders_are_never_pooled_as_seeds(runs):
    """Seeds 0 and 1 trained on two trees called ``data`` with other images: two rows, each n=1; seed 2 on a
    copy of the first tree at another path pools with seed 0 (the same images)."""
    root, _ = runs
    df = load_runs(root)
    _, numeric, keys = summarise(df, ["knn/top1"])
    assert "data.root" in keys
    assert sorted(numeric["knn/top1 n"].tolist()) == [1, 2]
    labels = set(df["data.root"])
    assert len(labels) == 2 and all(v.startswith("data#") for v in labels)  # same name: the content tells


def test_a_transfer_evaluation_adds_rows_and_keeps_the_run_s_own(runs, trees):
    """``eval run=R eval.dataset=X`` writes X's numbers as rows of their own: R's k-NN rows stay, its
    config is untouched, and the report shows X's row apart from R's own."""
    root, (r, _, _) = runs
    _, b, _ = trees
    own = [m for m in RunDir(r).read_metrics() if m["eval"] == "knn"]
    config = (r / "config.yaml").read_text()
    assert main(["eval", f"run={r}", "evals=knn", "eval.dataset=imagefolder", f"eval.data_root={b}"]) == 0
    after = RunDir(r).read_metrics()
    assert all(m in after for m in own)  # the run's own numbers, unchanged
    transfer = [m for m in after if m["eval"] == "knn" and m not in own]
    assert {m["metric"] for m in transfer} == {m["metric"] for m in own}
    assert (r / "config.yaml").read_text() == config
    df = load_runs(root)
    mine = df[(df["run_id"] == r.name) & (df["eval"] == "knn") & (df["metric"] == "top1")]
    assert sorted(mine["eval.dataset"].fillna("own").tolist()) == ["imagefolder", "own"]
    assert mine["eval.data_root"].isna().sum() == 1  # the run's own data: no evaluation folder named
    table, _, keys = summarise(df[df["run_id"] == r.name], ["knn/top1"])
    assert len(table) == 2 and "eval.dataset" in keys
    # evaluating the run's own data again replaces its rows, it does not add another copy
    assert main(["eval", f"run={r}", "evals=knn"]) == 0
    assert len([m for m in RunDir(r).read_metrics() if (m["eval"], m["metric"]) == ("knn", "top1")]) == 2


def test_a_resume_on_a_folder_that_now_holds_other_images_is_refused(trees, tmp_path, capsys, monkeypatch):
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import train
    from tests.conftest import killed_after_checkpoint

    a, _, _ = trees
    data = tmp_path / "data"
    shutil.copytree(a, data)
    args = [f"data.root={data}", f"run_dir={tmp_path / 'r'}", *RUN, "optim.epochs=2"]
    with killed_after_checkpoint(monkeypatch, lambda epoch, step: epoch == 1):
        train(build_config(args))
    (data / "test" / "class0" / "000.png").unlink()  # the same training images count, others not
    assert main(["run", *args, "resume=auto"]) == 2
    assert "holds other files than the run was trained on" in capsys.readouterr().err


def _fake_run(root, name, method, seed, lr, init, value, n_local=0, log=True):
    d = root / name
    d.mkdir(parents=True)
    cfg = {
        "method": {"name": method},
        "backbone": {"name": "vit_tiny"},
        "dataset": "cifar10",
        "seed": seed,
        "optim": {"epochs": 3, "lr": lr},
        "data": {"n_local": n_local},
    }
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [
        {"eval": "knn", "metric": "top1", "value": value},
        {"eval": "knn@init", "metric": "top1", "value": init},
    ]
    (d / "metrics.json").write_text(json.dumps(rows))
    if log:
        lines = [{"epoch": e, "loss": 5.0 - e * lr * 1000, "knn_top1": value - 0.01 * (3 - e)} for e in (1, 2, 3)]
        (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


@pytest.fixture
def captured(monkeypatch):
    """The figures the plots save, kept open for the test to read."""
    figs = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out_dir, name: figs.append(fig) or [])
    return figs


def test_curves_and_loss_panels_keep_settings_apart(tmp_path, captured):
    root = tmp_path / "runs"
    for seed in (0, 1):
        _fake_run(root, f"lo{seed}", "simclr", seed, 1e-3, 0.3, 0.4)
        _fake_run(root, f"hi{seed}", "simclr", seed, 2e-3, 0.3, 0.5)
    _fake_run(root, "d0", "dino", 0, 1e-3, 0.3, 0.45, n_local=0)
    _fake_run(root, "d1", "dino", 0, 1e-3, 0.3, 0.46, n_local=2)
    logs = load_train_logs(root)
    plots.curves(logs, tmp_path, "knn_top1", "knn_curve")
    labels = captured[-1].axes[0].get_legend_handles_labels()[1]
    assert len([lab for lab in labels if lab.startswith("simclr")]) == 2  # one line per learning rate
    assert len([lab for lab in labels if lab.startswith("dino")]) == 2  # one per n_local
    assert any("lr=0.001" in lab and "(n=2)" in lab for lab in labels)
    plots.loss_panels(logs, tmp_path)
    simclr_panel = next(ax for ax in captured[-1].axes if ax.get_title() == "simclr")
    assert len(simclr_panel.get_legend_handles_labels()[1]) == 2


def test_each_bar_s_random_init_mark_is_its_own_row_s(tmp_path, captured):
    root = tmp_path / "runs"
    _fake_run(root, "a", "dino", 0, 1e-3, 0.55, 0.57, n_local=2, log=False)
    _fake_run(root, "b", "dino", 0, 1e-3, 0.63, 0.60, n_local=0, log=False)
    plots.bar_chart(load_runs(root), tmp_path)
    ax = captured[-1].axes[0]
    marks = sorted(round(seg[0][1], 6) for c in ax.collections for seg in c.get_segments() if len(seg) == 2)
    assert marks == [55.0, 63.0]  # not their 59 % mean


def test_the_csv_leaves_std_empty_for_one_run_and_drops_float32_noise(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "a", "dino", 0, 1e-3, 0.3, 0.6499999761581421, log=False)
    assert main(["report", f"results_root={root}", f"out={tmp_path / 't'}"]) == 0
    text = (tmp_path / "t" / "summary.csv").read_text()
    assert "0.6499999761581421" not in text and "0.65" in text
    csv = pd.read_csv(tmp_path / "t" / "summary.csv")
    assert csv["knn/top1 std"].isna().all() and list(csv["knn/top1 n"]) == [1]
