"""Training throughput of the suite's engine step against the plain lightly loop (the "peer"), side by side.

    python benchmarks/throughput.py [method=dino,simclr,byol,moco,swav] [key=value ...]
        [--rounds 5] [--steps 4] [--warmup 2] [--images 1024] [--workers 0,1,2] [--no-loader]
        [--out throughput.csv]

Both sides get the same backbone (the suite's ``build_backbone`` with the same config), the same crops,
batch, threads and precision, and the same in-memory images (CIFAR-10's protocol subset when
``../shared/data/cifar10`` exists, random images otherwise), each through its own transform and a
``DataLoader`` with ``data.num_workers`` workers. The peer is each method written the way lightly's
documentation shows it: lightly's transform, heads and loss, ``update_momentum``, AdamW, one forward per
crop. Defaults: the issue's setting, ViT-tiny/4 (12 blocks) on 32 px, 2x32 + 6x16 px crops for DINO
and SwAV (2x32 for the others), batch 128, fp32.

Per round: warm-up steps, then ``--steps`` timed steps of the suite, then of the peer (A/B/A/B...), so
drift cancels; reported: the median images/s of each side and the median of the per-round ratios.
Also: model FLOPs per image (``torch.utils.flop_counter``, forward + backward of one suite step), the
achieved FLOP/s, the fraction of the fp32 (and bf16) matmul peak measured in the same run, and the
peak RSS of a process that ran that method alone (each method runs in its own subprocess). The data
loader alone (multi-crop images/s per worker count) goes to a second table.

Writes ``results/benchmarks/throughput.csv`` (or ``--out``; the overrides in its ``config`` column) and ``results/benchmarks/loader.csv`` (temp file + rename)
and ends with one line per method: ``METHOD suite/peer = R.RRx``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csvout import at_least, write_csv  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CIFAR = ROOT.parent / "shared" / "data" / "cifar10"
METHODS = ["dino", "simclr", "byol", "moco", "swav"]
DEFAULTS = ["preset=cifar10-cpu", "backbone.depth=12", "optim.batch_size=128", "data.num_workers=0", "progress=false"]
LOCAL = {"dino": 6, "swav": 6}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def defaults(over: list[str]) -> list[str]:
    """DEFAULTS, less the ViT depth when the overrides pick a ResNet (which has no such key)."""
    resnet = any(o.startswith("backbone=resnet") for o in over)
    return [d for d in DEFAULTS if not (resnet and d.startswith("backbone.depth="))]


def bench_overrides(overrides: list[str], method: str = "dino") -> tuple[str, list[str]]:
    """The one method a benchmark script runs (``method=`` in ``overrides``, else ``method``) and its full
    override list: DEFAULTS, the method, its local crops (LOCAL, unless ``data.n_local=`` is given), the rest."""
    method = next((o.split("=", 1)[1] for o in overrides if o.startswith("method=")), method)
    rest = [o for o in overrides if not o.startswith("method=")]
    if not any(o.startswith("data.n_local=") for o in rest):
        rest.append(f"data.n_local={LOCAL.get(method, 0)}")
    return method, defaults(rest) + [f"method={method}"] + rest


# -- data -----------------------------------------------------------------------------------------
def load_images(n: int) -> list[Image.Image]:
    if (CIFAR / "train").is_dir():
        files = sorted((CIFAR / "train").glob("*/*.png"))
        step = max(len(files) // n, 1)
        return [Image.open(f).convert("RGB") for f in files[::step][:n]]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


class ImageList(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), 0


def endless(make_loader):
    """Batches forever, a fresh loader (new epoch) whenever one runs out."""
    while True:
        yield from make_loader()


# -- the suite ------------------------------------------------------------------------------------
class Suite:
    def __init__(self, cfg, images):
        from ssl_bench.data.datasets import DataSplits, ListDataset
        from ssl_bench.engine.train import Trainer, build_method, make_optimizer, make_train_step

        self.trainer = Trainer(cfg)
        self.cfg = cfg = self.trainer.cfg
        if len(images) < cfg.optim.batch_size:
            raise SystemExit(f"--images {len(images)} is fewer than one batch: give at least optim.batch_size={cfg.optim.batch_size}")
        dev = self.trainer.device
        self.splits = DataSplits(ListDataset(images, [0] * len(images)), ListDataset(images[:1], [0]), 10, MEAN, STD)
        self.method = build_method(cfg).to(dev)
        self.method.train()
        self.spe = len(images) // cfg.optim.batch_size
        self.step_fn = make_train_step(cfg, self.method, make_optimizer(cfg, self.method), self.spe, dev, (MEAN, STD))
        # as the engine does: one loader for the whole run, workers started once
        self.batches = iter(self.trainer._loader(self.splits, 0, 0, 10**6))
        self.step = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            views, _ = next(self.batches)
            out, *_ = self.step_fn(views, self.step, self.step // self.spe)
            self.step += 1
        if n:
            out["loss"].detach().item()  # one sync at the end, as the engine does per epoch


# -- the peer: each method the way lightly's docs write it -----------------------------------------
def lightly_transform(cfg):
    from lightly import transforms as LT

    d, name = cfg.data, cfg.method.name
    blur = 0.5 if d.blur else 0.0
    norm = {"mean": list(MEAN), "std": list(STD)}
    if name in ("dino",):
        return LT.DINOTransform(global_crop_size=d.global_size, global_crop_scale=tuple(d.global_scale),
                                local_crop_size=d.local_size, local_crop_scale=tuple(d.local_scale),
                                n_local_views=d.n_local, gaussian_blur=(1.0, 0.1, 0.5) if d.blur else (0.0, 0.0, 0.0),
                                solarization_prob=0.2 if d.solarize else 0.0, normalize=norm)
    if name == "swav":
        return LT.SwaVTransform(crop_sizes=(d.global_size, d.local_size), crop_counts=(2, d.n_local),
                                crop_min_scales=(d.global_scale[0], d.local_scale[0]),
                                crop_max_scales=(d.global_scale[1], d.local_scale[1]), gaussian_blur=blur, normalize=norm)
    if name == "byol":
        v1 = LT.BYOLView1Transform(input_size=d.global_size, min_scale=d.global_scale[0],
                                   gaussian_blur=1.0 if d.blur else 0.0, normalize=norm)
        v2 = LT.BYOLView2Transform(input_size=d.global_size, min_scale=d.global_scale[0],
                                   gaussian_blur=0.1 if d.blur else 0.0, solarization_prob=0.2 if d.solarize else 0.0,
                                   normalize=norm)
        return LT.BYOLTransform(view_1_transform=v1, view_2_transform=v2)
    if name == "moco":
        return LT.MoCoV2Transform(input_size=d.global_size, min_scale=d.global_scale[0], gaussian_blur=blur, normalize=norm)
    return LT.SimCLRTransform(input_size=d.global_size, min_scale=d.global_scale[0], gaussian_blur=blur, normalize=norm)


class Peer:
    def __init__(self, cfg, images):
        from lightly import loss as LL
        from lightly.models import modules as LM
        from lightly.models.utils import deactivate_requires_grad

        from ssl_bench.backbones import build_backbone

        torch.manual_seed(cfg.seed)
        self.cfg, m = cfg, cfg.method
        self.dev = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
        self.bf16 = cfg.precision == "bf16"
        bb = build_backbone(cfg.backbone)
        dim = bb.embed_dim
        name = m.name
        self.name = name
        nn = torch.nn
        if name == "dino":
            self.student = nn.Sequential(bb, LM.DINOProjectionHead(dim, m.hidden_dim, m.bottleneck_dim, m.out_dim,
                                                                   batch_norm=m.use_bn_in_head, freeze_last_layer=1))
            self.teacher = nn.Sequential(copy.deepcopy(bb), LM.DINOProjectionHead(dim, m.hidden_dim, m.bottleneck_dim,
                                                                                  m.out_dim, batch_norm=m.use_bn_in_head))
            self.teacher.load_state_dict(self.student.state_dict())
            self.criterion = LL.DINOLoss(output_dim=m.out_dim, teacher_temp=m.teacher_temp, student_temp=m.student_temp,
                                         center_momentum=m.center_momentum)
            online, self.pairs = self.student, [(self.student, self.teacher)]
        elif name == "simclr":
            online = nn.Sequential(bb, LM.SimCLRProjectionHead(dim, m.hidden_dim, m.out_dim))
            self.criterion, self.pairs = LL.NTXentLoss(temperature=m.temperature), []
        elif name == "byol":
            self.backbone_proj = nn.Sequential(bb, LM.BYOLProjectionHead(dim, m.hidden_dim, m.out_dim))
            self.predictor = LM.BYOLPredictionHead(m.out_dim, m.hidden_dim, m.out_dim)
            self.target = copy.deepcopy(self.backbone_proj)
            online = nn.ModuleList([self.backbone_proj, self.predictor])
            self.criterion, self.pairs = LL.NegativeCosineSimilarity(), [(self.backbone_proj, self.target)]
        elif name == "moco":
            if m.version != 2:
                raise SystemExit("the peer loop covers MoCo v2 (lightly's documented MoCo example)")
            hidden, out = m.hidden_dim or 2048, m.out_dim or 128
            online = nn.Sequential(bb, LM.MoCoProjectionHead(dim, hidden, out))
            self.key = copy.deepcopy(online)
            self.criterion = LL.NTXentLoss(temperature=m.temperature, memory_bank_size=(m.queue_size, out))
            self.pairs = [(online, self.key)]
        elif name == "swav":
            self.proj = nn.Sequential(bb, LM.SwaVProjectionHead(dim, m.hidden_dim, m.out_dim))
            self.prototypes = LM.SwaVPrototypes(m.out_dim, m.n_prototypes, n_steps_frozen_prototypes=0)
            online = nn.ModuleList([self.proj, self.prototypes])
            self.criterion, self.pairs = LL.SwaVLoss(temperature=m.temperature, sinkhorn_iterations=m.sinkhorn_iterations,
                                                     sinkhorn_epsilon=m.sinkhorn_epsilon), []
        else:
            raise SystemExit(f"no peer loop for method {name!r}; peers exist for {', '.join(METHODS)}")
        self.online = online.to(self.dev)
        self.criterion.to(self.dev)  # lightly's DINOLoss center and memory banks are buffers
        for _, t in self.pairs:
            t.to(self.dev)
            deactivate_requires_grad(t)
        self.online.train()
        lr = cfg.optim.lr * cfg.optim.batch_size / 256.0
        self.opt = torch.optim.AdamW(self.online.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)
        ds = ImageList(images, lightly_transform(cfg))
        self.epoch = -1

        def next_loader():
            self.epoch += 1
            return torch.utils.data.DataLoader(ds, batch_size=cfg.optim.batch_size, shuffle=True, drop_last=True,
                                               num_workers=cfg.data.num_workers)

        self.batches = endless(next_loader)

    def _forward(self, views):
        from lightly.models.utils import update_momentum

        for online, target in self.pairs:
            update_momentum(online, target, m=0.99)
        c = self.criterion
        if self.name == "dino":
            teacher_out = [self.teacher(v) for v in views[:2]]
            student_out = [self.student(v) for v in views]
            return c(teacher_out, student_out, epoch=self.epoch)
        if self.name == "simclr":
            return c(self.online(views[0]), self.online(views[1]))
        if self.name == "byol":
            p0, p1 = self.predictor(self.backbone_proj(views[0])), self.predictor(self.backbone_proj(views[1]))
            with torch.no_grad():
                z0, z1 = self.target(views[0]), self.target(views[1])
            return 0.5 * (c(p0, z1) + c(p1, z0))
        if self.name == "moco":  # symmetric, as the suite's MoCo v2
            q0, q1 = self.online(views[0]), self.online(views[1])
            with torch.no_grad():
                k0, k1 = self.key(views[0]), self.key(views[1])
            return 0.5 * (c(q0, k1) + c(q1, k0))
        self.prototypes.normalize()
        feats = [torch.nn.functional.normalize(self.proj(v), dim=1) for v in views]
        scores = [self.prototypes(f, self.epoch) for f in feats]
        return c(scores[:2], scores[2:])

    def run(self, n: int) -> None:
        for _ in range(n):
            views, _ = next(self.batches)
            views = [v.to(self.dev, non_blocking=True) for v in views]
            with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                loss = self._forward(views)
            loss.backward()
            if self.name == "dino":
                self.student[1].cancel_last_layer_gradients(current_epoch=self.epoch)
            self.opt.step()
            self.opt.zero_grad()
        if n:
            loss.detach().item()


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


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(side, steps: int) -> float:
    sync()
    t = time.perf_counter()
    side.run(steps)
    sync()
    return steps * side.cfg.optim.batch_size / (time.perf_counter() - t)


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
    mem = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"method": cfg.method.name, "backbone": f"{cfg.backbone.name}/{cfg.backbone.patch_size} depth {cfg.backbone.depth}",
            "crops": f"{cfg.data.n_global}x{cfg.data.global_size}+{cfg.data.n_local}x{cfg.data.local_size}",
            "batch": cfg.optim.batch_size, "precision": cfg.precision, "threads": torch.get_num_threads(),
            "suite_img_s": statistics.median(s_rates), "peer_img_s": statistics.median(p_rates),
            "ratio": statistics.median(ratios), "gflops_per_img": fpi / 1e9,
            "suite_gflop_s": fpi * statistics.median(s_rates) / 1e9, "peak_mem_mib": mem}


def loader_speed(cfg_over: list[str], workers: list[int], images, batches: int = 6) -> list[dict]:
    from ssl_bench.config import build_config
    from ssl_bench.data.datasets import DataSplits, ListDataset
    from ssl_bench.engine.train import Trainer

    rows = []
    for w in workers:
        tr = Trainer(build_config(cfg_over + [f"data.num_workers={w}"]))
        splits = DataSplits(ListDataset(images, [0] * len(images)), ListDataset(images[:1], [0]), 10, MEAN, STD)
        it = endless(lambda: tr._loader(splits, 0))
        next(it)  # start-up (worker spawn) excluded
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        rate = batches * tr.cfg.optim.batch_size / (time.perf_counter() - t)
        rows.append({"workers": w, "crops": f"{tr.cfg.data.n_global}x{tr.cfg.data.global_size}+{tr.cfg.data.n_local}x{tr.cfg.data.local_size}",
                     "images_per_s": rate})
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
    print(f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    rows = []
    for m in methods:
        cmd = [sys.executable, __file__, "--one", f"method={m}", *over, "--rounds", str(a.rounds),
               "--steps", str(a.steps), "--warmup", str(a.warmup), "--images", str(a.images)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
        if res.returncode or line is None:
            raise SystemExit(f"{m}: benchmark subprocess failed:\n{res.stderr[-2000:]}")
        r = json.loads(line[len("RESULT "):])
        peak = peak16 if r["precision"] == "bf16" else peak32
        r["peak_fraction"] = r["suite_gflop_s"] * 1e9 / peak
        r["machine"] = f"{platform.machine()}-{os.cpu_count()}cpu" + (f"-{torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
        r["matmul_peak_gflop_s"] = peak / 1e9
        rows.append(r)
        print(f"{m}: suite {r['suite_img_s']:.1f} img/s, peer {r['peer_img_s']:.1f} img/s, {r['gflops_per_img']:.2f} GFLOP/img, "
              f"{r['peak_fraction']:.0%} of matmul peak, peak memory {r['peak_mem_mib']:.0f} MiB", flush=True)
    out = ROOT / "results" / "benchmarks"
    for r in rows:
        r["config"] = " ".join(over)
    write_csv(out / a.out, rows)
    if not a.no_loader:
        lrows = loader_speed(defaults(over) + ["method=dino", "data.n_local=6", *over], [int(w) for w in a.workers.split(",")],
                             load_images(a.images))
        # the default run owns loader.csv; a run with its own --out keeps its loader rows beside it
        write_csv(out / ("loader.csv" if a.out == "throughput.csv" else f"{Path(a.out).stem}_loader.csv"), lrows)
        for r in lrows:
            print(f"loader alone, {r['workers']} workers ({r['crops']}): {r['images_per_s']:.1f} images/s")
    for r in rows:
        print(f"{r['method']} suite/peer = {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
