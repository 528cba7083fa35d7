"""Write docs/configuration.md from the config dataclasses (fields, types, defaults and the comment
beside each field in the source). tests/test_docs.py fails when the committed page is out of date.

    python docs/make_config_reference.py
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _comments(cls) -> dict[str, str]:
    """field name -> the comment on its line (or the comment lines right above it) in the class source."""
    out, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        s = line.strip()
        if s.startswith("#"):
            above.append(s.lstrip("# "))
            continue
        m = re.match(r"(\w+)\s*:\s*[^=]+?(?:=\s*(.*?))?\s*(?:#\s*(.*))?$", s)
        if m and not s.startswith(("def ", "class ", "return", '"""')):
            out[m.group(1)] = " ".join(above + ([m.group(3)] if m.group(3) else []))
        above = []
    return out


def _value(v) -> str:
    """A default as the command line writes it (``null``, ``true``, ``[0.3, 1.0]``), never a dataclass repr."""
    import yaml

    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _notes(cls) -> dict[str, str]:
    """The source comments of ``cls`` and of every class it inherits from (the subclass's win)."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__[:-1]):
        if dataclasses.is_dataclass(base):
            out.update({k: v for k, v in _comments(base).items() if v or k not in out})
    return out


SELECTORS = {"method": "dino", "backbone": "vit_tiny"}  # build_config's choice when none is named


def _section(prefix: str, obj, lines: list[str], title: str = "", selected: str = "") -> None:
    """One table per config section: its keys as written on the command line (``method.hidden_dim``), their
    default in that section (``obj``: an instance, so a registered backbone shows its own sizes) and notes."""
    cls = type(obj)
    notes = _notes(cls)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    head = title or f"`{prefix or 'top level'}`"
    lines += [f"## {head}", "", *([selected, ""] if selected else []), doc, "", "| key | default | notes |"]
    lines.append("|---|---|---|")
    nested = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if not prefix and f.name in SELECTORS:  # method=NAME / backbone=NAME pick a section below
            lines.append(
                f"| `{f.name}` | `{SELECTORS[f.name]}` | {notes.get(f.name, '')}: one of the `{f.name}=` sections |"
            )
            continue
        if dataclasses.is_dataclass(value):
            nested.append((key, value))
            continue
        choices = f.metadata.get("choices")
        note = notes.get(f.name, "") + (f" One of: {', '.join(map(str, choices))}." if choices else "")
        rng = f.metadata.get("range")
        note += f" Valid: {rng.describe()}." if rng is not None else ""
        lines.append(f"| `{key}` | `{_value(value)}` | {note.strip().replace('|', '/')} |")
    lines.append("")
    for key, sub in nested:
        if key not in ("method", "backbone"):  # those two have one section per registered name, below
            _section(key, sub, lines)


def reference() -> str:
    from ssl_bench import config as C
    from ssl_bench import plugins
    from ssl_bench.registry import BACKBONES, METHODS

    plugins.load_all()

    lines = [
        "# Configuration reference",
        "",
        "Generated from the config dataclasses by `python docs/make_config_reference.py`; do not edit by hand.",
        "Keys merge as schema defaults <- `configs/<preset>.yaml` <- `configs/recipes/<method>/<preset>.yaml` <- "
        "`key=value` on the command line; `python -m ssl_bench config ...` prints the resolved result.",
        "",
    ]
    _section("", C.RunConfig(), lines)
    for reg, prefix in ((METHODS, "method"), (BACKBONES, "backbone")):
        for name in reg.names():
            obj = reg.get(name).config(name=name)
            selected = f"Selected by `{prefix}={name}`; these keys are then `{prefix}.KEY=VALUE`."
            _section(prefix, obj, lines, title=f"`{prefix}={name}`", selected=selected)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("configuration.md")
    out.write_text(reference())
    print(f"wrote {out}")
