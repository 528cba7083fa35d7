"""``COMMAND --help``: what the command takes; for commands that take config keys, every key of the
selected method and backbone."""

from __future__ import annotations

import textwrap

import yaml

from ssl_bench import plugins
from ssl_bench.cli import CONFIG_COMMANDS, HELP
from ssl_bench.config import build_config, to_yaml
from ssl_bench.results import flatten


def command_help(command: str, overrides: list[str]) -> str:
    """The command's help; for commands that take config keys, every key of the selected method/backbone
    (``run method=simclr --help`` lists SimCLR's), grouped by section."""
    lines = [f"python -m ssl_bench {command}: {HELP[command]}"]
    if command in CONFIG_COMMANDS:
        plugins.load_all()  # the selected method's keys
        chosen = [o for o in overrides if o.split("=", 1)[0] in ("method", "backbone", "preset")]
        if command == "ablate" and overrides and "=" not in overrides[0]:
            chosen.append(f"method={overrides[0]}")
        keys = list(flatten(yaml.safe_load(to_yaml(build_config(chosen)))))
        groups: dict[str, list[str]] = {}
        for k in keys:
            head, _, rest = k.partition(".")
            groups.setdefault(head + ("." if rest else ""), []).append(rest or head)
        lines.append("\nconfig keys (values: python -m ssl_bench config ...; meanings: docs/configuration.md):")
        top = [k for g, ks in groups.items() if not g.endswith(".") for k in ks]
        lines += textwrap.wrap(" ".join(top), 110, initial_indent="  ", subsequent_indent="  ")
        for g, ks in groups.items():
            if g.endswith("."):
                lines += textwrap.wrap(" ".join(ks), 110, initial_indent=f"  {g:<9}", subsequent_indent=" " * 11)
    return "\n".join(lines)
