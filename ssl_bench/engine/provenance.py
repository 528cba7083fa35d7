"""What a run was made with: code version, packages, hardware and launch, written to
``<run_dir>/provenance.json`` (one entry per start, so a resumed run shows every session)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import torch

from ssl_bench import dist as D
from ssl_bench.atomic import write_json
from ssl_bench.results import PROVENANCE, RunDir

PACKAGES = (
    "ssl-bench",
    "torch",
    "torchvision",
    "timm",
    "lightly",
    "numpy",
    "omegaconf",
    "pandas",
    "scikit-learn",
    "submitit",
)
FILE = PROVENANCE


def git_state(path: Path) -> dict:
    """The commit of the source tree at ``path`` and whether it had uncommitted changes (None outside git)."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def launch_kind() -> str:
    """How the processes of this run were started."""
    if os.environ.get("SSL_BENCH_LAUNCH"):
        return os.environ["SSL_BENCH_LAUNCH"]
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        return "torchrun"
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm"
    return "local"


def collect(device: torch.device, data: dict | None = None, normalize: dict | None = None) -> dict:
    src = Path(__file__).resolve().parents[2]
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "git": git_state(src),
        "packages": _versions(),
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "gpus_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "launch": launch_kind(),
        "world_size": D.world_size(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "data": data,  # ssl_bench.data.identity.run_data: the folders read, by name and content fingerprint
        "normalize": normalize,  # the mean / std the inputs were normalised with (export's pretrained_cfg)
    }


def record(run_dir: Path, device: torch.device, data: dict | None = None, normalize: dict | None = None) -> None:
    """Append this start's provenance to the run folder's list."""
    write_json(Path(run_dir) / FILE, [*RunDir(run_dir).provenance(), collect(device, data, normalize)])
