"""Every committed table renders again, unchanged, from the run summaries committed beside it."""

from pathlib import Path

import pytest

from ssl_bench.__main__ import main
from ssl_bench.report.archive import SUMMARY_FILES, TABLE, render
from tests.report.test_report import make_runs

RESULTS = Path(__file__).resolve().parents[2] / "results"
TABLES = sorted((RESULTS / "tables").glob("*.md"))


def test_every_committed_table_has_its_run_summaries():
    assert TABLES, "no committed tables found"
    missing = [t.stem for t in TABLES if not (RESULTS / "summaries" / t.stem / TABLE).is_file()]
    assert not missing, f"committed tables without results/summaries/NAME/{TABLE}: {missing}"


@pytest.mark.parametrize("name", [t.stem for t in TABLES])
def test_committed_table_renders_unchanged_from_its_summaries(name, tmp_path):
    summaries = RESULTS / "summaries" / name
    if not (summaries / TABLE).is_file():
        pytest.fail(f"results/summaries/{name}/{TABLE} is missing")
    paths = render(summaries, tmp_path)
    assert {p.name for p in paths} == {f"{name}.md", f"{name}.tex", f"{name}.csv"}
    for p in paths:
        assert p.read_text() == (RESULTS / "tables" / p.name).read_text(), f"{p.name} differs from the committed one"
    for run in summaries.iterdir():  # summaries are small files, never a checkpoint
        if run.is_dir():
            assert {f.name for f in run.iterdir()} <= set(SUMMARY_FILES)


def test_report_keeps_summaries_that_render_the_same_table(tmp_path, capsys):
    root = make_runs(tmp_path / "runs")
    (root / "dino-s0" / "checkpoint.pt").write_bytes(b"weights")
    out, kept = tmp_path / "tables", tmp_path / "kept"
    args = ["report", f"results_root={root}", f"out={out}", "name=t", "method=dino", f"summaries={kept}"]
    assert main(args) == 0
    assert sorted(p.name for p in kept.iterdir() if p.is_dir()) == ["dino-s0", "dino-s1"]  # only the reported runs
    assert not (kept / "dino-s0" / "checkpoint.pt").exists()
    again = render(kept, tmp_path / "again")
    for p in again:
        assert p.read_text() == (out / p.name).read_text()
    assert "simclr" not in (tmp_path / "again" / "t.md").read_text()
    (kept / "dino-s1" / "metrics.json").write_text('[{"eval": "knn", "metric": "top1", "value": 0.9}]')
    changed = render(kept, tmp_path / "changed")
    assert changed[0].read_text() != (out / "t.md").read_text()  # the test could fail: a changed run shows
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main([*args[:-1], f"summaries={other}"]) == 2  # a user's folder is not taken over
    assert "holds other files" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"
