"""The documentation's worked example stays true: the "add a method" code in docs/extending.md is run
as written and trains."""

import re
from pathlib import Path

from ssl_bench.config import build_config
from ssl_bench.engine.train import train
from ssl_bench.registry import METHODS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_add_a_method_example_registers_and_trains(tiny):
    code = re.findall(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), re.S)[0]
    try:
        exec(compile(code, "docs/extending.md", "exec"), {"__name__": "docs_example"})
        assert "simsiam" in METHODS.names()
        res = train(
            build_config(
                tiny
                + [
                    "method=simsiam",
                    "method.dim=32",
                    "method.pred_dim=8",
                    "optim.epochs=1",
                    "data.train_per_class=8",
                    "data.test_per_class=4",
                    "eval.knn_k=[5]",
                ]
            )
        )
        log = res.run_dir.read_train_log()
        assert len(log) == 1 and -1.0 <= log[0]["loss"] <= 1.0  # a negative cosine similarity
        assert ("knn", "top1") in {(r["eval"], r["metric"]) for r in res.metrics}
    finally:
        METHODS.unregister("simsiam")


def test_configuration_reference_is_current():
    import runpy

    gen = runpy.run_path(str(DOCS / "make_config_reference.py"))["reference"]()
    assert (DOCS / "configuration.md").read_text() == gen, "run: python docs/make_config_reference.py"
