"""What ``keep_cpu_memory`` buys: the suite's training step with glibc's default allocator against the
same step with freed memory kept in the heap. The setting is process-wide and cannot be undone, so each
side runs in its own process, alternating (off, on, off, on, ...) so machine drift cancels.

    python benchmarks/allocator.py [method=dino] [key=value ...] [--rounds 3] [--steps 3] [--warmup 2]
        [--images 512]

Setting: throughput.py's (ViT-tiny/4, 12 blocks, 32 px, batch 128, fp32; DINO/SwAV with 6 local crops).
Per process: warm-up steps, then ``--steps`` timed steps (loader included), each with its minor page
faults; the process's peak RSS. Reported: the median step time of each side, the median of per-round
ratios, faults per step. Writes ``results/benchmarks/allocator.csv`` (temp file + rename) and ends with
``keep_cpu_memory on/off = R.RRx``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from csvout import at_least, write_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def one(a, over: list[str]) -> dict:
    import torch
    from bench import Suite, bench_overrides, load_images

    from ssl_bench.config import build_config
    from ssl_bench.engine.train import resolve

    method, full = bench_overrides(over)
    cfg = resolve(build_config(full))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    suite = Suite(cfg, load_images(a.images))  # builds the Trainer: applies keep_cpu_memory or not
    suite.run(a.warmup)
    times, faults = [], []
    for _ in range(a.steps):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        suite.run(1)
        times.append(time.perf_counter() - t)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {
        "method": method,
        "step_s": statistics.median(times),
        "faults_per_step": statistics.median(faults),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*")
    p.add_argument("--rounds", type=at_least(1), default=3)
    p.add_argument("--steps", type=at_least(1), default=3)
    p.add_argument("--warmup", type=at_least(0), default=2)
    p.add_argument("--images", type=at_least(1), default=512)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one(a, a.overrides)))
        return
    res: dict[bool, list[dict]] = {False: [], True: []}
    for r in range(a.rounds):
        for keep in (False, True):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                *a.overrides,
                f"keep_cpu_memory={str(keep).lower()}",
                "--steps",
                str(a.steps),
                "--warmup",
                str(a.warmup),
                "--images",
                str(a.images),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
            if out.returncode or line is None:
                raise SystemExit(f"benchmark subprocess failed:\n{out.stderr[-2000:]}")
            res[keep].append(json.loads(line[len("RESULT ") :]))
            x = res[keep][-1]
            print(
                f"round {r + 1} keep_cpu_memory={keep}: {x['step_s']:.2f} s/step, "
                f"{x['faults_per_step']:.0f} faults/step, peak RSS {x['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    ratio = statistics.median(off["step_s"] / on["step_s"] for off, on in zip(res[False], res[True]))
    rows = [
        {
            "method": res[True][0]["method"],
            "keep_cpu_memory": str(keep).lower(),
            "step_s": statistics.median(x["step_s"] for x in res[keep]),
            "faults_per_step": statistics.median(x["faults_per_step"] for x in res[keep]),
            "peak_rss_mib": max(x["peak_rss_mib"] for x in res[keep]),
            "speedup_on_over_off": ratio,
            "rounds": a.rounds,
            "steps": a.steps,
            "config": " ".join(a.overrides) or "-",
        }
        for keep in (False, True)
    ]
    write_csv(ROOT / "results" / "benchmarks" / "allocator.csv", rows, replace_by=("method", "config"))
    print(f"keep_cpu_memory on/off = {ratio:.2f}x")


if __name__ == "__main__":
    main()
