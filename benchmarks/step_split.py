"""Where the suite/peer throughput gap comes from: the optimisation step alone on one fixed batch, and
the data loader alone, each side by side.

    python benchmarks/step_split.py [method=dino] [key=value ...] [--rounds 6] [--steps 1] [--images 512]
        [--profile N]

Compute: the same prefetched batch of crops goes through (a) the suite's engine step (crops of one
resolution forwarded as one batch), (b) the same step with one forward per crop, (c) the lightly peer
loop's step. Each round runs the three in a rotated order (abc, bca, cab, ...) so neither drift nor
position favours one; medians per variant and the median per-round ratio to the peer are reported.
Loader: images/s of each side's loader alone (same images, ``data.num_workers``), same rotation.
With ``data.augment=device``, also the suite's crops drawn on the device alone, next to the peer's loader
(which draws them in its workers). Loop: each side's full loop (loader, crops, step), and the suite's loop as
a fraction of its parts run in series (1 / (1/loader + 1/crops + 1/step), issue 18's >= 85% target):
``METHOD loop/serial parts = F``. ``--profile N``: a torch.profiler table of N full-loop suite steps.
Settings as ``benchmarks/throughput.py`` (ViT-tiny/4 12 blocks, 32 px, batch 128, fp32).

Writes ``results/benchmarks/step_split.csv`` (one set of rows per method and config, temp file + rename).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import MEAN, STD, Suite, bench_overrides, load_images, sync  # noqa: E402
from csvout import at_least, write_csv  # noqa: E402
from peer import Peer  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "step_split.csv"


def profile(suite, n: int) -> None:
    """torch.profiler over n steps of the suite's full loop: where host and device time go."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    suite.run(1)
    sync()
    t = time.perf_counter()
    with prof(activities=acts) as p:
        suite.run(n)
        sync()
    wall = time.perf_counter() - t
    key = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    print(p.key_averages().table(sort_by=key, row_limit=18), flush=True)
    print(
        f"profile: {n} steps in {wall:.3f} s wall "
        f"({n * suite.cfg.optim.batch_size / wall:.1f} img/s under the profiler)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--rounds", type=at_least(1), default=6)
    ap.add_argument("--steps", type=at_least(1), default=1)
    ap.add_argument("--images", type=at_least(1), default=512)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--profile", type=int, default=0, help="also profile N full suite steps (loader included)")
    a = ap.parse_args()
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import resolve

    method, over = bench_overrides(a.overrides)
    cfg = resolve(build_config(over))
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    images = load_images(a.images)
    suite, peer = Suite(cfg, images), Peer(cfg, images)
    mod = importlib.import_module(f"ssl_bench.methods.{method}")
    grouped = mod.multicrop_forward
    views, _ = next(peer.batches)  # one fixed batch (float crops) for all three
    views = [v.to(peer.dev) for v in views]
    bs = cfg.optim.batch_size

    def suite_step():
        suite.step_fn(views, 5, 0)

    def suite_per_crop():
        mod.multicrop_forward = lambda fn, vs: [fn(v) for v in vs]
        try:
            suite.step_fn(views, 5, 0)
        finally:
            mod.multicrop_forward = grouped

    def peer_step():
        with torch.autocast(peer.dev.type, dtype=torch.bfloat16, enabled=peer.bf16):
            loss = peer._forward(list(views))
        loss.backward()
        if peer.name == "dino":
            peer.student[1].cancel_last_layer_gradients(current_epoch=0)
        peer.opt.step()
        peer.opt.zero_grad()

    def suite_loader():
        next(suite.batches)

    def peer_loader():
        next(peer.batches)

    groups = {
        "compute": [("suite", suite_step), ("suite_per_crop", suite_per_crop), ("peer", peer_step)],
        "loader": [("suite", suite_loader), ("peer", peer_loader)],
        "loop": [("suite", lambda: suite.run(1)), ("peer", lambda: peer.run(1))],
    }
    if cfg.data.augment == "device":  # the crops drawn on the device, alone (not in "compute" above)
        from ssl_bench.engine.train import device_augmenter

        aug = device_augmenter(cfg, (MEAN, STD), suite.trainer.device)
        images = next(suite.batches)[0].to(suite.trainer.device)
        groups["augment"] = [("suite", lambda: aug(images, 5)), ("peer", peer_loader)]
    if a.profile:
        profile(suite, a.profile)
    rows = []
    for part, fs in groups.items():
        for _, f in fs:
            f()  # warm-up
        rates: dict[str, list[float]] = {n: [] for n, _ in fs}
        for r in range(a.rounds):
            order = fs[r % len(fs) :] + fs[: r % len(fs)]
            for name, f in order:
                sync()
                t = time.perf_counter()
                for _ in range(a.steps):
                    f()
                sync()
                rates[name].append(a.steps * bs / (time.perf_counter() - t))
            print(f"{part} round {r + 1}: " + "  ".join(f"{n} {rates[n][-1]:.1f}" for n, _ in fs), flush=True)
        for name, _ in fs:
            ratio = statistics.median(x / y for x, y in zip(rates[name], rates["peer"]))
            rows.append(
                {
                    "method": method,
                    "part": part,
                    "variant": name,
                    "images_per_s": statistics.median(rates[name]),
                    "min": min(rates[name]),
                    "max": max(rates[name]),
                    "ratio_to_peer": ratio,
                    "rounds": a.rounds,
                    "steps": a.steps,
                    "config": " ".join(a.overrides),
                }
            )
            print(
                f"{method} {part} {name}: {rows[-1]['images_per_s']:.1f} img/s (median of {a.rounds}), "
                f"/peer = {ratio:.2f}x",
                flush=True,
            )
    rate = {(r["part"], r["variant"]): r["images_per_s"] for r in rows}
    parts = [rate[("loader", "suite")], rate[("compute", "suite")]] + (
        [rate[("augment", "suite")]] if ("augment", "suite") in rate else []
    )
    serial = 1 / sum(1 / p for p in parts)
    rows.append(
        {
            "method": method,
            "part": "loop / serial parts",
            "variant": "suite",
            "images_per_s": rate[("loop", "suite")] / serial,
            "min": "",
            "max": "",
            "ratio_to_peer": "",
            "rounds": a.rounds,
            "steps": a.steps,
            "config": " ".join(a.overrides),
        }
    )
    print(f"{method} loop/serial parts = {rows[-1]['images_per_s']:.2f} (parts in series {serial:.1f} img/s)")
    write_csv(Path(a.out), rows, replace_by=("method", "config"))


if __name__ == "__main__":
    main()
