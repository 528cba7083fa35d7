import json

import pandas as pd

from ssl_bench.__main__ import main
from ssl_bench.config import build_config
from ssl_bench.sweep import ablation_grid, ablation_variants, expand_grid
from tests.conftest import TINY


def test_expand_grid_keeps_bracketed_lists():
    g = expand_grid(["method=dino,byol", "seed=0,1", "data.global_scale=[0.25,1.0]"])
    assert len(g) == 4
    assert g[0] == ["method=dino", "seed=0", "data.global_scale=[0.25,1.0]"]
    assert g[-1] == ["method=byol", "seed=1", "data.global_scale=[0.25,1.0]"]


def test_ablation_variants_switch_the_right_knobs():
    """DINO's grid is data (configs/ablations/dino.yaml), filled from the base config's temperatures."""
    v = ablation_variants(
        ablation_grid("dino"), build_config(["method=dino", "method.student_temp=0.1", "method.teacher_temp=0.04"])
    )
    assert v["center+sharpen"] == ["method.centering=true", "method.teacher_temp=0.04"]
    assert "method.teacher_temp=0.1" in v["center only"] and "method.warmup_teacher_temp=0.1" in v["center only"]
    assert v["sharpen only"][0] == "method.centering=false"


def test_ablate_runs_four_variants_and_writes_figure_and_table(tmp_path, capsys):
    over = TINY + [
        f"results_root={tmp_path / 'runs'}",
        "optim.epochs=2",
        "data.train_per_class=8",
        "data.test_per_class=4",
        "eval.knn_k=[5]",
        "method.out_dim=64",
        "method.hidden_dim=32",
        "method.bottleneck_dim=16",
        "data.n_local=1",
        f"out={tmp_path / 'out'}",
        f"summaries={tmp_path / 'kept'}",
    ]
    assert main(["ablate", "dino", *over]) == 0
    table = pd.read_csv(tmp_path / "out" / "ablation_dino.csv")
    assert list(table["variant"]) == ["center+sharpen", "center only", "sharpen only", "neither"]
    assert table["knn top-1"].between(0, 1).all() and table["collapsed"].isin([True, False]).all()
    for ext in ("pdf", "png"):
        assert (tmp_path / "out" / f"ablation_dino.{ext}").stat().st_size > 1000
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 4
    cfgs = [(r / "config.yaml").read_text() for r in runs]
    assert sum("centering: false" in c for c in cfgs) == 2
    manifest = json.loads(next((tmp_path / "sweeps").glob("*.json")).read_text())
    assert len(manifest["members"]) == 4
    # the kept summaries render the same table (md, tex with % in siunitx columns, csv)
    from ssl_bench.report.archive import render

    for p in render(tmp_path / "kept", tmp_path / "again"):
        assert p.read_text() == (tmp_path / "out" / p.name).read_text(), p.name
    tex = (tmp_path / "out" / "ablation_dino.tex").read_text()
    # a summaries folder holding other files is refused before any variant trains
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    before = len(list((tmp_path / "runs").iterdir()))
    args = [o if not o.startswith("summaries=") else f"summaries={other}" for o in over]
    assert main(["ablate", "dino", *args]) == 2
    assert len(list((tmp_path / "runs").iterdir())) == before
    assert "{knn top-1 (\\%)}" in tex and "S[table-format=" in tex
