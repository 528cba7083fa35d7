"""Preset tuning on the validation split (PROTOCOL.md: never on test/), at the CI budget.

    python benchmarks/tune_on_val.py GRID.json OUT.tsv [VAL_PER_CLASS]

GRID.json maps a name to a list of overrides, e.g. {"dino_lr4x": ["method=dino", "data.n_local=2",
"optim.lr=4e-3"]}. Each entry trains on 2,000 CIFAR-10 images (first 200 per class), ViT-tiny/4 depth 2,
batch 64, 3 epochs (overrides win), and is evaluated by k-NN on the next VAL_PER_CLASS (default 500)
train images of each class. One tab-separated line per entry: the method's evaluated network, its
online/student backbone, random init, first -> last loss, final diagnostics, wall time, overrides.
"""

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench.config import build_config  # noqa: E402
from ssl_bench.data.datasets import build_datasets  # noqa: E402
from ssl_bench.engine.checkpoint import load_checkpoint  # noqa: E402
from ssl_bench.engine.train import Trainer, build_method, train  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
BASE = [
    "preset=cifar10-cpu",
    f"data.root={CIFAR}",
    "backbone.depth=2",
    "data.train_per_class=200",
    "optim.batch_size=64",
    "optim.epochs=3",
    "progress=false",
    "seed=0",
    "eval.knn_k=[20]",
]


def main() -> None:
    grid = json.loads(Path(sys.argv[1]).read_text())
    val = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    with open(sys.argv[2], "a") as out:
        for name, overrides in grid.items():
            t = time.time()
            cfg = build_config(
                BASE + [f"data.val_per_class={val}", *overrides, f"results_root=results/runs/tune/{name}"]
            )
            res = train(cfg)
            m = {(x["eval"], x["metric"]): x["value"] for x in res.metrics}
            trainer = Trainer(replace(cfg, run_dir=str(res.run_dir.path)))
            method = build_method(trainer.cfg)
            load_checkpoint(res.run_dir.checkpoint, method, None)
            online = next((getattr(method, a) for a in ("student", "online", "query") if hasattr(method, a)), None)
            student = float("nan")
            if online is not None:
                splits = build_datasets(trainer.cfg.dataset, trainer.cfg.data)
                rows = trainer.evaluate(online.backbone, splits, ["knn"])
                student = next(r["value"] for r in rows if r["metric"] == "top1")
            log = res.run_dir.read_train_log()
            diag = {k: round(v, 3) for k, v in log[-1].items() if "entropy" in k or k == "kl"}
            out.write(
                f"{name}\t{m[('knn', 'top1')]:.4f}\t{student:.4f}\t{m[('knn@init', 'top1')]:.4f}\t"
                f"{log[0]['loss']:.3f}->{log[-1]['loss']:.3f}\t{diag}\t{time.time() - t:.0f}s\t{overrides}\n"
            )
            out.flush()


if __name__ == "__main__":
    main()
