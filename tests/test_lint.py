"""ruff's lint rules and formatter (configured in pyproject.toml: line length 120) hold for the whole tree."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is installed by the test extra: pip install -e '.[test]'")
@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(args):
    r = subprocess.run([RUFF, *args], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]


@pytest.mark.skipif(
    shutil.which("mypy") is None, reason="mypy is installed by the test extra: pip install -e '.[test]'"
)
def test_mypy_on_the_core_and_the_methods():
    r = subprocess.run([shutil.which("mypy"), "ssl_bench", "methods"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
