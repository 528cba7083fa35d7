"""Start-up of the command line: each command against ``python -c "import ssl_bench"`` (and ``import torch``
for scale), one fresh process per call, the calls interleaved round by round.

    python benchmarks/startup.py [--rounds 5]

Writes results/benchmarks/startup.csv (median wall seconds per call and its ratio to ``import ssl_bench``)
and prints one line per call.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from csvout import at_least, write_csv  # noqa: E402


def calls(tmp: Path) -> dict[str, list[str]]:
    py = [sys.executable]
    return {
        "import ssl_bench": [*py, "-c", "import ssl_bench"],
        "import torch": [*py, "-c", "import torch"],
        "--help": [*py, "-m", "ssl_bench", "--help"],
        "report": [*py, "-m", "ssl_bench", "report", f"results_root={tmp}", f"out={tmp / 'tables'}"],
        "status": [*py, "-m", "ssl_bench", "status", str(tmp)],
        "list": [*py, "-m", "ssl_bench", "list"],
        "config": [*py, "-m", "ssl_bench", "config"],
        "run --help": [*py, "-m", "ssl_bench", "run", "--help"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=at_least(1), default=5)
    p.add_argument("--out", default="results/benchmarks/startup.csv")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        todo = calls(Path(tmp))
        times: dict[str, list[float]] = {k: [] for k in todo}
        codes: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, cmd in todo.items():
                t0 = time.perf_counter()
                codes[name] = subprocess.run(cmd, capture_output=True).returncode
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["import ssl_bench"])
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        rows.append(
            {
                "call": name,
                "median_s": med,
                "ratio_to_import_ssl_bench": med / base,
                "exit_code": codes[name],
                "rounds": args.rounds,
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            }
        )
        print(f"{name:<18} {med:6.2f} s  {med / base:6.1f}x import ssl_bench  (exit {codes[name]})")
    write_csv(Path(args.out), rows)


if __name__ == "__main__":
    main()
