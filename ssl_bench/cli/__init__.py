"""The command line: ``python -m ssl_bench COMMAND [key=value ...]``; every command lives in this package
(``train``: run, eval, export, config, list; ``report``: report, plot; ``sweeps``: sweep, status, ablate)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ssl_bench import plugins
from ssl_bench.cli.report import cmd_plot, cmd_report
from ssl_bench.cli.sweeps import cmd_ablate, cmd_status, cmd_sweep
from ssl_bench.cli.train import cmd_config, cmd_eval, cmd_export, cmd_list, cmd_run
from ssl_bench.config import build_config, to_yaml
from ssl_bench.errors import UserError
from ssl_bench.results import flatten

USAGE = """python -m ssl_bench COMMAND [key=value ...]

commands:
  run     train one method and evaluate it      run method=dino dataset=cifar10 data.root=PATH
  sweep   a grid as one SLURM job array           sweep method=dino,byol seed=0,1,2 launcher=slurm
  status  state of a sweep's members or a run    status results/sweeps/SWEEP.json
  ablate  DINO centering x sharpening grid        ablate dino [method.center_momentum=0.9,0.99]
  eval    evaluate a finished run                eval run=RUN_DIR evals=knn,linear,seg eval.seg_root=PATH
          ... or any weights file                 eval weights=FILE [backbone=vit_small] evals=knn,linear
  export  a run's encoder for timm/torchvision   export run=RUN_DIR out=encoder.pt [format=timm|torchvision]
  plot    figures under results/figures          plot [bar|knn_curve|loss|attention|all] [method=dino ...]
  config  print the resolved config, run nothing     config method=simclr preset=paper [key=value ...]
  list    registered methods, backbones, datasets, evals and presets
  report  table of all runs (md/tex/csv)          report [method=dino,byol] [results_root=results/runs]
"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


COMMANDS = {
    "config": cmd_config,
    "sweep": cmd_sweep,
    "status": cmd_status,
    "ablate": cmd_ablate,
    "run": cmd_run,
    "eval": cmd_eval,
    "export": cmd_export,
    "list": cmd_list,
    "report": cmd_report,
    "plot": cmd_plot,
}


class Terminated(BaseException):
    """SIGTERM turned into an exception, so a run started here cleans up like on Ctrl-C: a run folder
    with no checkpoint yet is removed (``Trainer.run``), one with a checkpoint stays for resume=auto."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _main(argv)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


HELP = {  # per command: what it does, its own options (config keys are listed from the schema)
    "run": "train one method and evaluate it; every config key below can be set as key=value",
    "config": "print the resolved config (preset <- recipe <- key=value) and run nothing",
    "sweep": "run a grid (key=a,b,c expands) as one SLURM job array or one after the other; any config key",
    "ablate": "ablate METHOD: run the grid in configs/ablations/METHOD.yaml (+ any config key, grids allowed)",
    "eval": "eval run=RUN_DIR [evals=knn,linear,seg] [eval.*, data.root, device, threads], or\n"
    "eval weights=FILE [backbone=NAME ...] [evals=...] [dataset=..., data.*, eval.*]: score a weights file",
    "export": "export run=RUN_DIR out=FILE [format=timm|torchvision]: the evaluation encoder as a state dict, "
    ".safetensors and the .json of timm.create_model / torchvision arguments",
    "report": "report [results_root=results/runs] [out=results/tables] [name=summary] [columns=knn/top1,...] "
    "[by=method,optim.lr] [caption=TEXT] [KEY=VALUE,... filters on any run column or config key]",
    "plot": "plot [bar|knn_curve|loss|attention|all] [results_root=...] [out=results/figures] [run=RUN_DIR for "
    "attention] [KEY=VALUE filters]",
    "status": "status results/sweeps/SWEEP.json | RUN_DIR: the state of each member (and its log tail)",
    "list": "list the registered methods, backbones, datasets, evaluations and presets",
}
CONFIG_COMMANDS = ("run", "config", "sweep", "ablate", "eval")


def command_help(command: str, overrides: list[str]) -> str:
    """The command's help; for commands that take config keys, every key of the selected method/backbone
    (``run method=simclr --help`` lists SimCLR's), grouped by section."""
    import textwrap

    lines = [f"python -m ssl_bench {command}: {HELP[command]}"]
    if command in CONFIG_COMMANDS:
        import yaml

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


def _main(argv: list[str] | None) -> int:
    plugins.load_all()  # the CLI loads every plug-in once; the core below never imports one
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and any(a in ("-h", "--help") for a in argv[1:]):
        try:
            print(command_help(argv[0], [a for a in argv[1:] if a not in ("-h", "--help")]))
        except UserError as err:
            print(f"error: {_one_line(err)}", file=sys.stderr)
            return 2
        return 0
    parser = argparse.ArgumentParser(prog="python -m ssl_bench", usage=USAGE, add_help=True)
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args.overrides)
    except UserError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 143


def _one_line(err: Exception) -> str:
    """DataLoader workers wrap errors in a traceback; keep only the original message."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
