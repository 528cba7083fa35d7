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


def _default(f) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
        return "(see below)" if dataclasses.is_dataclass(v) else repr(v)
    return ""


def _section(prefix: str, cls, lines: list[str]) -> None:
    notes = _comments(cls)
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    lines += [f"## `{prefix or 'top level'}`", "", doc, "", "| key | default | notes |", "|---|---|---|"]
    nested = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        choices = f.metadata.get("choices")
        note = notes.get(f.name, "") + (f" One of: {', '.join(map(str, choices))}." if choices else "")
        rng = f.metadata.get("range")
        note += f" Valid: {rng.describe()}." if rng is not None else ""
        lines.append(f"| `{key}` | `{_default(f)}` | {note.replace('|', '/')} |")
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(value):
            nested.append((key, type(value)))
    lines.append("")
    for key, sub in nested:
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
    _section("", C.RunConfig, lines)
    for reg, prefix in ((METHODS, "method"), (BACKBONES, "backbone")):
        seen = set()
        for name in reg.names():
            cls = reg.get(name).config
            if cls in seen:
                continue
            seen.add(cls)
            _section(f"{prefix} ({prefix}={name})", cls, lines)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("configuration.md")
    out.write_text(reference())
    print(f"wrote {out}")
