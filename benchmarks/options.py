"""What each speed option of the suite buys, measured side by side: the engine step with an option on
against the same step without it, A/B rounds in one process so machine drift cancels.

    python benchmarks/options.py [method=dino] [key=value ...] [--options "compile=true;precision=bf16"]
        [--rounds 5] [--steps 4] [--warmup 2] [--images 512]

Base setting: throughput.py's (ViT-tiny/4, 12 blocks, 32 px, batch 128, fp32; DINO/SwAV with 6 local
crops), changed by the key=value overrides. Each option (``;``-separated overrides) builds a second
suite; the first warm-up steps (where ``torch.compile`` compiles) are not timed. Writes
``results/benchmarks/options.csv`` (or ``--out``; temp file + rename) and ends with one line per option:
``OPTION on/off = R.RRx`` (median of per-round ratios).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ROOT, Suite, bench_overrides, load_images, timed  # noqa: E402
from csvout import at_least, write_csv  # noqa: E402

OPTIONS = "compile=true;precision=bf16;data.normalize_on_device=true;data.augment=device"


def main() -> None:
    from ssl_bench.config import build_config
    from ssl_bench.engine.train import resolve

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*")
    p.add_argument("--options", default=OPTIONS)
    p.add_argument("--rounds", type=at_least(1), default=5)
    p.add_argument("--steps", type=at_least(1), default=4)
    p.add_argument("--warmup", type=at_least(0), default=2)
    p.add_argument("--images", type=at_least(1), default=512)
    p.add_argument("--out", default="options.csv", help="file name under results/benchmarks/")
    a = p.parse_args()
    method, base = bench_overrides(a.overrides)
    over = base[base.index(f"method={method}") + 1 :]  # the overrides, with the method's local crops
    images = load_images(a.images)
    rows = []
    for option in [o.strip() for o in a.options.split(";") if o.strip()]:
        cfg_off = resolve(build_config(base))
        cfg_on = resolve(build_config(base + option.split()))
        if cfg_off.threads > 0:
            torch.set_num_threads(cfg_off.threads)
        off, on = Suite(cfg_off, images), Suite(cfg_on, images)
        off.run(a.warmup)
        on.run(a.warmup)
        r_off, r_on = [], []
        for _ in range(a.rounds):
            r_off.append(timed(off, a.steps))
            r_on.append(timed(on, a.steps))
        ratio = statistics.median(x / y for x, y in zip(r_on, r_off))
        row = {
            "method": method,
            "option": option,
            "base": " ".join(over) or "-",
            "off_img_s": statistics.median(r_off),
            "on_img_s": statistics.median(r_on),
            "ratio": ratio,
            "threads": torch.get_num_threads(),
        }
        rows.append(row)
        print(f"{option}: on {row['on_img_s']:.1f} img/s, off {row['off_img_s']:.1f} img/s", flush=True)
        del off, on
    write_csv(ROOT / "results" / "benchmarks" / a.out, rows)
    for r in rows:
        print(f"{r['option']} on/off = {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
