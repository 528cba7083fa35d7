import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from ssl_bench.errors import UserError
from ssl_bench.report.tables import summary_table
from ssl_bench.results import load_runs

FIXTURE = {  # (method, seed) -> knn top1
    ("dino", 0): 0.50,
    ("dino", 1): 0.60,
    ("simclr", 0): 0.40,
    ("simclr", 1): 0.44,
}


def make_runs(root):
    for (method, seed), acc in FIXTURE.items():
        d = root / f"{method}-s{seed}"
        d.mkdir(parents=True)
        cfg = {
            "method": {"name": method, "centering": True},
            "backbone": {"name": "vit_tiny"},
            "dataset": "cifar10",
            "seed": seed,
            "optim": {"epochs": 3},
        }
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        rows = [
            {"eval": "knn", "metric": "top1", "value": acc},
            {"eval": "knn@init", "metric": "top1", "value": 0.3},
            {"eval": "train", "metric": "collapsed", "value": 0.0},
        ]
        (d / "metrics.json").write_text(json.dumps(rows))
        log = [{"epoch": e, "loss": 5.0 - e - seed * 0.1, "teacher_entropy": 3.0, "kl": 1.0} for e in (1, 2, 3)]
        (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return root


def test_tidy_frame_and_mean_std(tmp_path):
    df = load_runs(make_runs(tmp_path / "runs"))
    assert set(df.columns) >= {
        "run_id",
        "method",
        "backbone",
        "dataset",
        "epochs",
        "seed",
        "eval",
        "metric",
        "value",
        "collapsed",
        "method.centering",
    }
    assert len(df) == 12
    table = summary_table(df, ["knn/top1"])
    dino = table[table["method"] == "dino"]["knn/top1"].item()
    simclr = table[table["method"] == "simclr"]["knn/top1"].item()
    assert dino == "0.5500 ± 0.0707 (n=2)"  # std with ddof=1 of (0.5, 0.6)
    assert simclr == "0.4200 ± 0.0283 (n=2)"
    one = summary_table(df[df["seed"] == 0], ["knn/top1"])
    assert one[one["method"] == "dino"]["knn/top1"].item() == "0.5000 (n=1)"  # no std from one seed


def test_report_and_plot_commands_write_files(tmp_path):
    root = make_runs(tmp_path / "runs")
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "ssl_bench", *a], capture_output=True, text=True, cwd=tmp_path
    )
    r = run("report", f"results_root={root}", f"out={tmp_path / 'tables'}")
    assert r.returncode == 0, r.stderr
    assert "0.5500 ± 0.0707 (n=2)" in r.stdout
    for ext in ("md", "tex", "csv"):
        assert (tmp_path / "tables" / f"summary.{ext}").stat().st_size > 0
    tex = (tmp_path / "tables" / "summary.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"$\pm$" in tex
    csv = pd.read_csv(tmp_path / "tables" / "summary.csv")
    assert list(csv["method"]) == ["dino", "simclr"]
    r = run("report", f"results_root={root}", "method=simclr", f"out={tmp_path / 't2'}")
    assert "dino" not in r.stdout and "simclr" in r.stdout
    r = run("plot", f"results_root={root}", f"out={tmp_path / 'fig'}")
    assert r.returncode == 0, r.stderr
    for name in ("bar_knn_top1", "loss_curve"):
        for ext in ("pdf", "png"):
            assert (tmp_path / "fig" / f"{name}.{ext}").stat().st_size > 1000
    r = run("report", f"results_root={root}", "nosuch=1")
    assert r.returncode == 2 and "unknown report filter 'nosuch'" in r.stderr
    r = run("plot", "bogus", f"results_root={root}")
    assert r.returncode == 2 and "valid: bar" in r.stderr


def test_every_plot_kind_from_a_real_tiny_run(tmp_path):
    """knn_curve (eval.knn_every) and attention (a ViT checkpoint) come from an actual run, not fixtures."""
    from ssl_bench.__main__ import main
    from tests.conftest import TINY

    root = tmp_path / "runs"
    assert (
        main(
            [
                "run",
                "method=dino",
                "optim.epochs=2",
                "data.train_per_class=16",
                "eval.knn_every=1",
                "method.out_dim=64",
                "method.hidden_dim=32",
                "method.bottleneck_dim=16",
                "data.n_local=2",
                *TINY,
                f"results_root={root}",
            ]
        )
        == 0
    )
    run_dir = next(root.iterdir())
    fig = tmp_path / "fig"
    for kind in ("bar", "knn_curve", "loss", "all"):
        assert main(["plot", kind, f"results_root={root}", f"out={fig}"]) == 0
    assert main(["plot", "attention", f"run={run_dir}", f"out={fig}"]) == 0
    for name in ("bar_knn_top1", "knn_curve", "loss_curve", f"attention_{run_dir.name}"):
        for ext in ("pdf", "png"):
            assert (fig / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"


def test_report_puts_the_benchmark_s_published_number_beside_ours(tmp_path):
    """Runs of a recipe whose benchmark publishes numbers (solo-learn for preset=cifar10) get a
    'published' column with the epochs it trained; runs of other presets get none."""
    from ssl_bench.report.tables import add_published

    root = tmp_path / "runs"
    for method, preset, acc in (("byol", "cifar10", 0.41), ("simclr", "cifar10", 0.40), ("dino", "cifar10-cpu", 0.3)):
        d = root / f"{method}-{preset}"
        d.mkdir(parents=True)
        cfg = {
            "method": {"name": method},
            "backbone": {"name": "resnet18"},
            "dataset": "cifar10",
            "preset": preset,
            "seed": 0,
            "optim": {"epochs": 2},
        }
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        (d / "metrics.json").write_text(json.dumps([{"eval": "linear", "metric": "top1", "value": acc}]))
    table, sources = add_published(summary_table(load_runs(root), ["linear/top1"]), ["linear/top1"])
    cell = dict(zip(table["method"], table["published linear/top1"]))
    assert cell == {"byol": "0.9258 (1000 ep)", "simclr": "0.9074 (1000 ep)", "dino": "—"}
    assert len(sources) == 1 and "solo-learn" in sources[0]


def test_a_number_below_random_init_is_marked(tmp_path):
    root = make_runs(tmp_path / "runs")
    rows = json.loads((root / "dino-s0" / "metrics.json").read_text())
    for r in rows:
        if r["eval"] == "knn@init":
            r["value"] = 0.9  # above both dino seeds' k-NN (0.5, 0.6)
    (root / "dino-s0" / "metrics.json").write_text(json.dumps(rows))
    (root / "dino-s1" / "metrics.json").write_text(json.dumps(rows))
    table = summary_table(load_runs(root), ["knn/top1", "knn@init/top1"])
    cell = dict(zip(table["method"], table["knn/top1"]))
    assert cell["dino"].endswith("↓init") and not cell["simclr"].endswith("↓init")
    assert not any(str(c).endswith("↓init") for c in table["knn@init/top1"])


def make_setting_runs(root, settings):
    """Run folders: one per (lr, teacher_temp, seed) with a k-NN number, all of one method."""
    for i, (lr, tt, seed, acc) in enumerate(settings):
        d = root / f"run{i}"
        d.mkdir(parents=True)
        cfg = {
            "method": {"name": "dino", "teacher_temp": tt},
            "backbone": {"name": "vit_tiny"},
            "dataset": "cifar10",
            "seed": seed,
            "optim": {"epochs": 3, "lr": lr},
            "run_dir": str(d),
            "results_root": str(root),
        }
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        rows = [
            {"eval": "knn", "metric": "top1", "value": acc},
            {"eval": "train", "metric": "collapsed", "value": float(acc < 0.2)},
        ]
        (d / "metrics.json").write_text(json.dumps(rows))
    return root


def test_runs_that_differ_in_a_setting_are_never_pooled(tmp_path):
    """The issue's case: same seed, lr 1e-3 vs 2e-3 and teacher_temp 0.02 vs 0.03 are two rows (each n=1), not
    '0.4500 ± 0.2121 (n=2)'; seeds of one setting are pooled; run_dir/results_root never split rows."""
    from ssl_bench.report.tables import summarise

    root = make_setting_runs(tmp_path / "runs", [(1e-3, 0.02, 0, 0.30), (2e-3, 0.03, 0, 0.60), (1e-3, 0.02, 1, 0.40)])
    table, numeric, keys = summarise(load_runs(root), ["knn/top1", "train/collapsed"])
    assert keys[-2:] == ["method.teacher_temp", "optim.lr"] and "run_dir" not in keys
    cells = dict(zip(table["optim.lr"], table["knn/top1"]))
    assert cells == {"0.001": "0.3500 ± 0.0707 (n=2)", "0.002": "0.6000 (n=1)"}
    assert dict(zip(table["optim.lr"], table["train/collapsed"])) == {"0.001": "0/2", "0.002": "0/1"}
    row = numeric[numeric["optim.lr"] == "0.001"].iloc[0]
    assert abs(row["knn/top1 mean"] - 0.35) < 1e-9 and row["knn/top1 n"] == 2
    # an explicit by= that would pool the two settings is refused, naming the settings it would pool
    with pytest.raises(UserError, match="pool runs that differ in method.teacher_temp, optim.lr"):
        summarise(load_runs(root), ["knn/top1"], by=["method"])
    assert len(summarise(load_runs(root), ["knn/top1"], by=["method", "optim.lr", "method.teacher_temp"])[0]) == 2
    with pytest.raises(UserError, match="unknown column 'knn/top9'; valid for these runs: knn/top1"):
        summarise(load_runs(root), ["knn/top9"])


def test_report_command_filters_any_config_key_and_writes_numbers(tmp_path):
    root = make_setting_runs(tmp_path / "runs", [(1e-3, 0.02, 0, 0.30), (2e-3, 0.03, 0, 0.60), (1e-3, 0.02, 1, 0.40)])
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "ssl_bench", *a], capture_output=True, text=True, cwd=tmp_path
    )
    r = run("report", f"results_root={root}", f"out={tmp_path / 't'}")
    assert r.returncode == 0, r.stderr
    assert "rows also differ in: method.teacher_temp, optim.lr" in r.stdout
    csv = pd.read_csv(tmp_path / "t" / "summary.csv")
    assert csv["knn/top1 mean"].dtype == float and list(csv["knn/top1 n"]) == [2, 1]
    r = run("report", f"results_root={root}", "optim.lr=2e-3", f"out={tmp_path / 'u'}")  # 2e-3 == 0.002
    assert r.returncode == 0, r.stderr
    assert "0.6000 (n=1)" in r.stdout and "0.3500" not in r.stdout
    r = run("report", f"results_root={root}", "columns=knn/top1,nope/x", f"out={tmp_path / 'v'}")
    assert r.returncode == 2 and "unknown column 'nope/x'" in r.stderr and not (tmp_path / "v").exists()


def test_latex_is_escaped_and_wide_tables_are_split(tmp_path):
    from ssl_bench.report.tables import to_latex

    table = pd.DataFrame(
        {
            "method": ["a_b&c", "x%y"],
            "dataset": ["cifar10", "cifar10"],
            **{f"knn/top1_k{k}": ["0.1 ± 0.0 (n=2)", "0.2 (n=1)"] for k in range(7)},
        }
    )
    tex = to_latex(table, "Runs of 50% & more", keys=["method", "dataset"])
    assert r"a\_b\&c" in tex and r"x\%y" in tex and r"50\% \& more" in tex and r"$\pm$" in tex
    assert tex.count(r"\begin{tabular}") == 2 and "(part 2 of 2)" in tex  # 7 value columns: 5 + 2
    assert "dataset cifar10" in tex and "& cifar10" not in tex  # a key constant over rows moves to the caption
    assert "k-NN top-1 (k=3)" in tex  # human headers


def test_latex_for_papers_percent_siunitx_n_in_caption_and_fits_the_page(tmp_path):
    """Fractions in % to one decimal in siunitx columns, std only where there are two runs, the number of
    runs in the caption (an n column when rows differ), each tabular shrunk to the text width when wider."""
    import re

    from ssl_bench.report.tables import summarise, to_latex

    df = load_runs(make_runs(tmp_path / "runs"))
    table, numeric, keys = summarise(df, ["knn/top1", "knn@init/top1", "train/collapsed"])
    tex = to_latex(table, "", keys, numeric=numeric)
    assert tex.startswith("% needs \\usepackage{booktabs, siunitx, adjustbox}")
    assert "n = 2 runs per row" in tex and "mean $\\pm$ std over runs that differ only in seed" in tex
    assert "55.0 \\pm 7.1" in tex and "42.0 \\pm 2.8" in tex  # (0.5, 0.6) and (0.40, 0.44), ddof=1
    assert "{k-NN top-1 (\\%)}" in tex
    assert re.search(r"\\begin\{tabular\}\{lS\[table-format=2\.1\(\d\)[^]]*\]S\[table-format=2\.1", tex)
    assert tex.count("\\begin{adjustbox}{max width=\\textwidth}") == tex.count("\\begin{tabular}") == 1
    assert "0.5500" not in tex and "(n=" not in tex
    one = df[df["seed"] == 0]
    table, numeric, keys = summarise(one, ["knn/top1"])
    tex = to_latex(table, "", keys, numeric=numeric)
    assert "n = 1 runs per row" in tex and "50.0 \\\\" in tex and "\\pm" not in tex.split("\\midrule")[1]
    mixed = df[(df["seed"] == 0) | (df["method"] == "dino")]
    table, numeric, keys = summarise(mixed, ["knn/top1"])
    tex = to_latex(table, "", keys, numeric=numeric)
    assert "n: runs per row" in tex and "{n}" in tex
    assert re.search(r"dino & 2 & 55\.0 \\pm 7\.1", tex) and re.search(r"simclr & 1 & 40\.0 ", tex)


def test_a_collapsed_run_marks_every_number_of_its_row(tmp_path):
    from ssl_bench.report.tables import COLLAPSED

    root = make_setting_runs(tmp_path / "runs", [(1e-3, 0.02, 0, 0.10), (1e-3, 0.02, 1, 0.50), (2e-3, 0.03, 0, 0.60)])
    table = summary_table(load_runs(root), ["knn/top1"])  # the collapsed column is not even shown
    cells = dict(zip(table["optim.lr"], table["knn/top1"]))
    assert cells["0.001"].endswith(COLLAPSED) and not cells["0.002"].endswith(COLLAPSED)
    r = subprocess.run(
        [sys.executable, "-m", "ssl_bench", "report", f"results_root={root}", f"out={tmp_path / 't'}"],
        capture_output=True,
        text=True,
    )
    assert "a run of this row collapsed" in r.stdout and "1/2" in r.stdout
    assert r"\dag" in (tmp_path / "t" / "summary.tex").read_text()
