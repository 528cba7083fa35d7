"""The command line: ``python -m ssl_bench COMMAND [key=value ...]``; every command lives in this package
(``run``; ``weights``: eval, export; ``show``: config, list; ``report``; ``plot``; ``sweeps``: sweep, ablate;
``status``; ``help``: per-command help), imported only when that command runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from ssl_bench.errors import UserError

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


def process_rank() -> int:
    """This process's rank under torchrun / srun / the local DDP workers (0 otherwise), read without
    importing torch: torch.distributed's once initialised, else RANK or SLURM_PROCID."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


class MainRankOnly(logging.Filter):
    """Only rank 0 logs below WARNING: a run on 8 processes writes its progress once, and every rank's
    warnings and errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or process_rank() == 0


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MainRankOnly())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


COMMANDS = {  # each command's module is imported when it runs (benchmarks/startup.py measures it)
    "config": "ssl_bench.cli.show:cmd_config",
    "sweep": "ssl_bench.cli.sweeps:cmd_sweep",
    "status": "ssl_bench.cli.status:cmd_status",
    "ablate": "ssl_bench.cli.sweeps:cmd_ablate",
    "run": "ssl_bench.cli.run:cmd_run",
    "eval": "ssl_bench.cli.weights:cmd_eval",
    "export": "ssl_bench.cli.weights:cmd_export",
    "list": "ssl_bench.cli.show:cmd_list",
    "report": "ssl_bench.cli.report:cmd_report",
    "plot": "ssl_bench.cli.plot:cmd_plot",
}


def command(name: str):
    """The function of command ``name``, from its own module: `--help`, `report` and `status` do not import
    torch, the plug-ins or matplotlib. Modules that resolve configs import the engine, which loads every
    plug-in (a plug-in that fails to import is a UserError here)."""
    module, func = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), func)


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
    "sweep": "run a grid (key=a,b,c expands) as one SLURM job array or one after the other (a failed member "
    "is recorded and the rest run; the exit code counts the failed); any config key",
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


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS and any(a in ("-h", "--help") for a in argv[1:]):
        try:
            print(
                importlib.import_module("ssl_bench.cli.help").command_help(
                    argv[0], [a for a in argv[1:] if a not in ("-h", "--help")]
                )
            )
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
        return command(args.command)(args.overrides)
    except UserError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # the one place where the OS's refusals (paths, permissions, disk) become one line
        where = f": {err.filename!r}" if err.filename else ""
        print(f"error: {err.strerror or _one_line(err)}{where}", file=sys.stderr)
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
