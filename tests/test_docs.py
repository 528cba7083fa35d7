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


def test_every_configuration_key_has_a_note():
    """Each row of docs/configuration.md says what its key does (a comment beside the field in the source)."""
    rows = [r for r in (DOCS / "configuration.md").read_text().splitlines() if r.startswith("| `")]
    assert len(rows) > 150
    bare = [r.split("|")[1].strip() for r in rows if not r.split("|")[3].strip()]
    assert not bare, f"keys without a note (comment the field in its dataclass): {bare}"


def test_a_method_from_an_outside_package_is_found_through_its_entry_point(tiny, tmp_path):
    """The package of docs/extending.md (its python and toml blocks as written), installed by pip into a
    temporary folder, is listed and trained by the command line of a fresh process; a plug-in that fails to
    import is a one-line error naming its entry point."""
    import os
    import subprocess
    import sys

    text = (DOCS / "extending.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    toml = re.findall(r"```toml\n(.*?)```", text, re.S)[0]
    src = tmp_path / "my-ssl"
    (src / "my_ssl").mkdir(parents=True)
    (src / "my_ssl" / "__init__.py").write_text("")
    (src / "my_ssl" / "simsiam.py").write_text(code)
    (src / "pyproject.toml").write_text(toml)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", site]
    subprocess.run([*pip, str(src)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ssl_bench", *args], env=env, capture_output=True, text=True)

    listed = cli("list")
    assert listed.returncode == 0 and "simsiam" in listed.stdout, listed.stderr
    args = [*tiny, "method=simsiam", "method.dim=32", "method.pred_dim=8", "optim.epochs=1", "evals=knn"]
    args += ["data.train_per_class=8", "data.test_per_class=4", "eval.knn_k=[5]", "eval.baseline=false"]
    trained = cli("run", *args)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    assert "method: simsiam" in (run / "config.yaml").read_text().replace("name: simsiam", "method: simsiam")
    # the same package with a module that does not import
    (site / "my_ssl" / "simsiam.py").write_text("import not_a_module_anywhere\n")
    broken = cli("list")
    err = broken.stderr.strip()
    assert broken.returncode == 2 and "\n" not in err, err
    assert "plug-in simsiam = 'my_ssl.simsiam' (entry point ssl_bench.plugins of my-ssl) failed to import" in err
