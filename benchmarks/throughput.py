"""Training throughput of the suite's engine step against the plain lightly loop (the "peer"), side by side.

    python benchmarks/throughput.py [method=dino,simclr,byol,moco,swav] [key=value ...]
        [--rounds 5] [--steps 4] [--warmup 2] [--images 1024] [--workers 0,1,2] [--no-loader]
        [--out throughput.csv]

Both sides get the same backbone (the suite's ``build_backbone`` with the same config), the same crops,
batch, threads and precision, and the same in-memory images (CIFAR-10's protocol subset when
``../shared/data/cifar10`` exists, random images otherwise), each through its own transform and a
``DataLoader`` with ``data.num_workers`` workers. The peer is each method written the way lightly's
documentation shows it (``peer.py``): lightly's transform, heads and loss, ``update_momentum``, AdamW, one
forward per crop. Defaults: the issue's setting, ViT-tiny/4 (12 blocks) on 32 px, 2x32 + 6x16 px crops for DINO
and SwAV (2x32 for the others), batch 128, fp32.

Per round: warm-up steps, then ``--steps`` timed steps of the suite, then of the peer (A/B/A/B...), so
drift cancels; reported: the median images/s of each side and the median of the per-round ratios.
Also: model FLOPs per image (``torch.utils.flop_counter``, forward + backward of one suite step), the
achieved FLOP/s, the fraction of the fp32 (and bf16) matmul peak measured in the same run, and the
peak RSS of a process that ran that method alone (each method runs in its own subprocess). The data
loader alone (multi-crop images/s per worker count) goes to a second table.

Writes ``results/benchmarks/throughput.csv`` (or ``--out``; the overrides in its ``config`` column) and
``results/benchmarks/loader.csv`` (``<out>_loader.csv`` with ``--out``; temp file + rename)
and ends with one line per method: ``METHOD suite/peer = R.RRx``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench import (  # noqa: E402  (benchmarks/ is on
    MEAN,
    METHODS,
    ROOT,
    STD,
    Suite,
    bench_overrides,
    defaults,
    endless,  # sys.path when run as a script)
    load_images,
    timed,
)
from csvout import at_least, write_csv  # noqa: E402
from peer import Peer  # noqa: E402


# -- measurements ---------------------------------------------------------------------------------
def matmul_peak(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        n = 8192
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        if dev == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def flops_per_image(suite: Suite) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    views, _ = next(suite.batches)
    with FlopCounterMode(display=False) as fc:
        suite.step_fn(views, suite.step, suite.step // suite.spe)
    return fc.get_total_flops() / suite.cfg.optim.batch_size


def one_method(args, overrides: list[str]) -> dict:
    """Run in a subprocess: build both sides, A/B rounds, FLOPs; print one JSON line."""
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import resolve

    cfg = resolve(build_config(overrides))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    images = load_images(args.images)
    suite, peer = Suite(cfg, images), Peer(cfg, images)
    suite.run(args.warmup)
    peer.run(args.warmup)
    fpi = flops_per_image(suite)
    s_rates, p_rates = [], []
    for _ in range(args.rounds):
        s_rates.append(timed(suite, args.steps))
        p_rates.append(timed(peer, args.steps))
    ratios = [s / p for s, p in zip(s_rates, p_rates)]
    mem = (
        torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "method": cfg.method.name,
        "backbone": (
            f"{cfg.backbone.name}/{cfg.backbone.patch_size} depth {cfg.backbone.depth}"
            if hasattr(cfg.backbone, "patch_size")
            else cfg.backbone.name + (" cifar stem" if getattr(cfg.backbone, "cifar_stem", False) else "")
        ),
        "crops": f"{cfg.data.n_global}x{cfg.data.global_size}+{cfg.data.n_local}x{cfg.data.local_size}",
        "batch": cfg.optim.batch_size,
        "precision": cfg.precision,
        "threads": torch.get_num_threads(),
        "suite_img_s": statistics.median(s_rates),
        "peer_img_s": statistics.median(p_rates),
        "ratio": statistics.median(ratios),
        "gflops_per_img": fpi / 1e9,
        "suite_gflop_s": fpi * statistics.median(s_rates) / 1e9,
        "peak_mem_mib": mem,
    }


def loader_speed(cfg_over: list[str], workers: list[int], images, batches: int = 6) -> list[dict]:
    from ssl_bench.config import build_config
    from ssl_bench.data.datasets import DataSplits, ListDataset
    from ssl_bench.engine.train import Trainer

    rows = []
    for w in workers:
        tr = Trainer(build_config(cfg_over + [f"data.num_workers={w}"]))
        splits = DataSplits(ListDataset(images, [0] * len(images)), ListDataset(images[:1], [0]), 10, MEAN, STD)
        it = endless(lambda: tr.training_batches(splits, 0))
        next(it)  # start-up (worker spawn) excluded
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batches * tr.cfg.optim.batch_size / (time.perf_counter() - t)
        rows.append(
            {
                "workers": w,
                "crops": f"{tr.cfg.data.n_global}x{tr.cfg.data.global_size}"
                f"+{tr.cfg.data.n_local}x{tr.cfg.data.local_size}",
                "images_per_s": rate,
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", help="key=value; method=a,b selects methods")
    p.add_argument("--rounds", type=at_least(1), default=5)
    p.add_argument("--steps", type=at_least(1), default=4)
    p.add_argument("--warmup", type=at_least(0), default=2)
    p.add_argument("--images", type=at_least(1), default=1024)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--no-loader", action="store_true")
    p.add_argument("--out", default="throughput.csv", help="file name under results/benchmarks/")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    over = [o for o in a.overrides if not o.startswith("method=")]
    methods = next((o.split("=", 1)[1].split(",") for o in a.overrides if o.startswith("method=")), METHODS)
    if a.one:  # the parent passes one method=
        print("RESULT " + json.dumps(one_method(a, bench_overrides(a.overrides)[1])))
        return
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(
        f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s "
        f"({torch.get_num_threads()} threads)"
    )
    rows = []
    for m in methods:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            f"method={m}",
            *over,
            "--rounds",
            str(a.rounds),
            "--steps",
            str(a.steps),
            "--warmup",
            str(a.warmup),
            "--images",
            str(a.images),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if res.returncode or line is None:
            raise SystemExit(f"{m}: benchmark subprocess failed:\n{res.stderr[-2000:]}")
        r = json.loads(line[len("RESULT ") :])
        peak = peak16 if r["precision"] == "bf16" else peak32
        r["peak_fraction"] = r["suite_gflop_s"] * 1e9 / peak
        r["machine"] = f"{platform.machine()}-{os.cpu_count()}cpu" + (
            f"-{torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
        )
        r["matmul_peak_gflop_s"] = peak / 1e9
        rows.append(r)
        print(
            f"{m}: suite {r['suite_img_s']:.1f} img/s, peer {r['peer_img_s']:.1f} img/s, "
            f"{r['gflops_per_img']:.2f} GFLOP/img, "
            f"{r['peak_fraction']:.0%} of matmul peak, peak memory {r['peak_mem_mib']:.0f} MiB",
            flush=True,
        )
    out = ROOT / "results" / "benchmarks"
    for r in rows:
        r["config"] = " ".join(over)
    write_csv(out / a.out, rows)
    if not a.no_loader:
        lrows = loader_speed(
            defaults(over) + ["method=dino", "data.n_local=6", *over],
            [int(w) for w in a.workers.split(",")],
            load_images(a.images),
        )
        # the default run owns loader.csv; a run with its own --out keeps its loader rows beside it
        write_csv(
            out / "loader.csv"
            if a.out == "throughput.csv"
            else (out / a.out).with_name(f"{Path(a.out).stem}_loader.csv"),
            lrows,
        )
        for r in lrows:
            print(f"loader alone, {r['workers']} workers ({r['crops']}): {r['images_per_s']:.1f} images/s")
    for r in rows:
        print(f"{r['method']} suite/peer = {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
