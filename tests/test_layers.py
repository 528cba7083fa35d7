"""The import graph follows the layers (docs/extending.md, shared DESIGN): a module imports only from its
own layer or the ones below. Arrows that still break the order are listed in KNOWN, to be removed one by
one; a new arrow fails, and so does a KNOWN arrow that no longer exists (the list stays honest)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package-dir mapping of pyproject.toml: top-level plug-in folders install into the ssl_bench namespace
ROOTS = {
    "ssl_bench": REPO / "ssl_bench",
    "ssl_bench.methods": REPO / "methods",
    "ssl_bench.evals": REPO / "evals",
    "ssl_bench.slurm": REPO / "slurm",
}
LAYERS = [  # lowest first; a module belongs to the longest matching prefix
    ("ssl_bench", 0),
    ("ssl_bench.errors", 0),
    ("ssl_bench.atomic", 0),
    ("ssl_bench.registry", 1),
    ("ssl_bench.schedules", 1),
    ("ssl_bench.dist", 1),
    ("ssl_bench.config", 2),
    ("ssl_bench.presets", 2),
    ("ssl_bench.overrides", 2),
    ("ssl_bench.data", 3),
    ("ssl_bench.backbones", 3),
    ("ssl_bench.results", 3),
    ("ssl_bench.methods", 4),
    ("ssl_bench.evals", 4),
    ("ssl_bench.plugins", 4),  # imports every plug-in (dynamically); the CLI and the engine call it
    ("ssl_bench.engine", 5),
    ("ssl_bench.report", 6),
    ("ssl_bench.slurm", 7),
    ("ssl_bench.sweep", 7),
    ("ssl_bench.engine.launch", 7),
    ("ssl_bench.cli", 8),
    ("ssl_bench.__main__", 8),
]
# (importer, imported) arrows against the order that are still there (none today)
KNOWN: set[tuple[str, str]] = set()


def layer(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    assert best is not None, f"{module} has no layer: add it to LAYERS"
    return dict(LAYERS)[best]


def modules() -> dict[str, Path]:
    out = {}
    for pkg, root in ROOTS.items():
        for f in root.rglob("*.py"):
            rel = f.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            if name.split(".")[1:2] in (["methods"], ["evals"], ["slurm"]) and root == REPO / "ssl_bench":
                continue
            out[name] = f
    return out


def arrows() -> set[tuple[str, str]]:
    mods = modules()
    found = set()
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports the module; `from mod import name` the module itself
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module for a in node.names
                ]
            for t in targets:
                if t in mods and t != name:
                    found.add((name, t))
    return found


def test_imports_follow_the_layers():
    upward = {(a, b) for a, b in arrows() if layer(b) > layer(a)}
    new = upward - KNOWN
    assert not new, "imports against the layer order: " + ", ".join(f"{a} -> {b}" for a, b in sorted(new))
    gone = {k for k in KNOWN if k not in upward}
    assert not gone, "no longer there, remove from KNOWN: " + ", ".join(f"{a} -> {b}" for a, b in sorted(gone))


def test_the_graph_sees_module_and_function_level_imports():
    found = arrows()
    assert ("ssl_bench.methods.dino", "ssl_bench.schedules") in found  # module level, package-dir mapped
    assert ("ssl_bench.engine.evaluation", "ssl_bench.evals.features") in found  # inside a function
    assert layer("ssl_bench.engine.train") > layer("ssl_bench.methods.dino") > layer("ssl_bench.schedules")


def test_methods_and_evals_never_import_the_engine():
    bad = {
        (a, b)
        for a, b in arrows()
        if a.startswith(("ssl_bench.methods", "ssl_bench.evals"))
        and b.startswith(("ssl_bench.engine", "ssl_bench.report", "ssl_bench.slurm", "ssl_bench.__main__"))
    }
    assert not bad, bad


def test_the_core_imports_no_plug_in():
    """Building a config imports no method, evaluation or engine module: plug-ins are loaded by the CLI and
    the engine (ssl_bench.plugins.load_all), and a lookup before that says so."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from ssl_bench.config import build_config\n"
        "from ssl_bench.errors import UserError\n"
        "try:\n    build_config(['method=dino'])\nexcept UserError as e:\n    print('error:', e)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('ssl_bench.methods', 'ssl_bench.evals', "
        "'ssl_bench.engine', 'ssl_bench.backbones'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO).stdout
    assert "none registered yet: call ssl_bench.plugins.load_all()" in out
    assert out.strip().endswith("[]"), out


def test_the_project_s_own_imports_are_at_module_top():
    """A function-level import between the project's own modules hides an arrow from a reader (heavy optional
    libraries such as kornia, submitit, seaborn or tensorboard may still be imported where they are used)."""
    inner = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for sub in ast.walk(node):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        mod = sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name
                        if mod and mod.startswith("ssl_bench"):
                            inner.append(f"{name}:{sub.lineno} {mod}")
    assert not inner, "move to the module top: " + ", ".join(inner)
