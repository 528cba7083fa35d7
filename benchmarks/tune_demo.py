"""Choose the README demo's recipe (``python -m ssl_bench run method=dino``, embedded digits) on a
validation split of the digits training images, never on the test images it prints.

    python benchmarks/tune_demo.py GRID.json OUT.tsv

GRID.json maps a name to a list of overrides on top of the default preset, e.g.
{"ep10": ["optim.epochs=10"]}. Each entry pre-trains on the first 115 training images of each digit
(~80% of them) and is evaluated by k-NN on the next 28 of each class; one tab-separated line per entry:
k-NN of the evaluated network, random init, the difference, first -> last loss, wall time (training and
both evaluations), overrides.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssl_bench.config import build_config  # noqa: E402
from ssl_bench.engine.train import train  # noqa: E402

BASE = ["method=dino", "data.train_per_class=115", "data.val_per_class=28", "progress=false", "seed=0"]


def main() -> None:
    grid = json.loads(Path(sys.argv[1]).read_text())
    with open(sys.argv[2], "a") as out:
        for name, overrides in grid.items():
            t = time.time()
            res = train(build_config(BASE + overrides + [f"results_root=results/runs/tune_demo/{name}"]))
            m = {(x["eval"], x["metric"]): x["value"] for x in res.metrics}
            log = res.run_dir.read_train_log()
            knn, init = m[("knn", "top1")], m[("knn@init", "top1")]
            out.write(
                f"{name}\t{knn:.4f}\t{init:.4f}\t{knn - init:+.4f}\t{log[0]['loss']:.3f}->{log[-1]['loss']:.3f}\t"
                f"{time.time() - t:.0f}s\t{overrides}\n"
            )
            out.flush()


if __name__ == "__main__":
    main()
