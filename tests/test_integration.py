"""Short CPU runs on real CIFAR-10 (../shared/data/cifar10): every method's encoder must beat the same
backbone at random initialisation (same seed) on test k-NN top-1; DINO's run is also evaluated on
Weizmann Horse segmentation. Skipped with a reason when the data is absent.

Budget (every method alike unless noted): 2,000 pre-training images (first 200 sorted files per class), ViT-tiny/4
depth 2 at 32 px, 2 global crops, batch 64, 3 epochs (93 steps), seed 0; k-NN bank = those 2,000 images,
queries = the first 100 test images per class (1,000).

The non-contrastive methods need more steps than the three with negatives: DINO, BYOL and SwAV run
without local crops, with their crops drawn batched (data.augment=device), for 12 / 6 / 8 epochs, and
are scored on all 10,000 test images. At 93 steps BYOL (0.2840) and SwAV (0.2580) stayed below init
(0.2960), and no setting tried on the validation split changed that. Chosen on the validation split
(3,000 queries, init 0.2660; README): DINO 0.2903 at 12 epochs (16 px local crops of 32 px images kept
its teacher at init); BYOL with a 30x predictor LR 0.2740 at 93 steps, 0.2760 at 6 epochs; SwAV with 30
prototypes at temperature 0.2 above init from epoch 5 of 12 (0.2777 at 12). Multi-crop DINO and SwAV
are covered by the unit tests and by the protocol run (4 local crops).
"""

import pytest

from ssl_bench.config import build_config
from ssl_bench.engine.train import evaluate_run, train
from tests.conftest import CIFAR10, HORSE, requires_cifar, requires_horse

pytestmark = [pytest.mark.integration, requires_cifar]

BUDGET = [
    "preset=cifar10-cpu",
    f"data.root={CIFAR10}",
    "backbone.depth=2",
    "data.train_per_class=200",
    "data.test_per_class=100",
    "optim.batch_size=64",
    "optim.epochs=3",
    "data.num_workers=0",
    "progress=false",
    "seed=0",
    "eval.knn_k=[20]",
]
METHOD_OVERRIDES = {
    "dino": ["method=dino", "data.n_local=0", "optim.epochs=12", "data.augment=device", "data.test_per_class=1000"],
    "simclr": ["method=simclr"],
    "byol": [
        "method=byol",
        "method.predictor_lr_mult=30",
        "optim.epochs=6",
        "data.augment=device",
        "data.test_per_class=1000",
    ],
    "moco": ["method=moco"],
    "moco_v3": ["method=moco_v3"],
    "swav": [
        "method=swav",
        "data.n_local=0",
        "method.n_prototypes=30",
        "method.temperature=0.2",
        "optim.epochs=8",
        "data.augment=device",
        "data.test_per_class=1000",
    ],
}
# Margins measured on this budget (seed 0; deterministic, same numbers in repeated runs): on the 1,000
# queries (init 0.2960) simclr 0.3060, moco v2 0.3060, moco v3 0.3160; on all 10,000 test images (init
# 0.2487) dino 0.2780 (+2.9), swav 0.2749 (+2.6), byol 0.2557 (+0.7, under two standard errors of a paired
# difference on 10,000 queries: the thinnest); asserted with some slack.
MARGIN = {"simclr": 0.005, "moco": 0.005, "moco_v3": 0.005, "dino": 0.015, "byol": 0.005, "swav": 0.015}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {}


def _train(name, tmp_path_factory, runs):
    if name not in runs:
        root = tmp_path_factory.mktemp(name)
        runs[name] = train(build_config(BUDGET + METHOD_OVERRIDES[name] + [f"results_root={root}"]))
    return runs[name]


@pytest.mark.parametrize("name", list(METHOD_OVERRIDES))
def test_beats_random_init_on_cifar10_knn(name, tmp_path_factory, runs):
    result = _train(name, tmp_path_factory, runs)
    m = {(r["eval"], r["metric"]): r["value"] for r in result.metrics}
    trained, init = m[("knn", "top1")], m[("knn@init", "top1")]
    print(f"{name}: k-NN top-1 {trained:.4f} vs random init {init:.4f}")
    log = result.run_dir.read_train_log()
    assert log[-1]["loss"] < log[0]["loss"]
    assert trained > init + MARGIN[name], (
        f"{name}: {trained:.4f} does not beat random init {init:.4f} by {MARGIN[name]}"
    )


def test_dino_trains_without_collapse(tmp_path_factory, runs):
    """The DINO run's loss falls, its teacher stays sharp per image (entropy well below ln K) and diverse
    across images (mean-output entropy well above the per-image entropy), KL stays away from 0."""
    import math

    result = _train("dino", tmp_path_factory, runs)
    log = result.run_dir.read_train_log()
    m = {(r["eval"], r["metric"]): r["value"] for r in result.metrics}
    log_k = math.log(result.run_dir.read_config()["method"]["out_dim"])
    assert log[-1]["loss"] < log[0]["loss"]
    assert m[("train", "collapsed")] == 0.0
    assert log[-1]["teacher_entropy"] < 0.5 * log_k
    assert log[-1]["teacher_mean_entropy"] > log[-1]["teacher_entropy"] + 1.0
    assert log[-1]["kl"] > 0.5


@requires_horse
def test_dino_segmentation_on_weizmann_horse(tmp_path_factory, runs):
    result = _train("dino", tmp_path_factory, runs)
    ev = evaluate_run(result.run_dir.path, ["evals=seg", f"eval.seg_root={HORSE}", "eval.seg_size=64"])
    m = {(r["eval"], r["metric"]): r["value"] for r in ev.metrics}
    for key in ("jaccard_best_head", "jaccard_mean_heads", "patch_probe_miou"):
        assert 0.0 <= m[("seg", key)] <= 1.0 and 0.0 <= m[("seg@init", key)] <= 1.0
        print(f"seg {key}: dino {m[('seg', key)]:.4f}  random init {m[('seg@init', key)]:.4f}")
    # measured on this run: best-head attention Jaccard 0.2975 vs 0.1631 at init (the protocol run's
    # teacher, trained with local crops, attends to the background instead: README)
    assert m[("seg", "jaccard_best_head")] > m[("seg@init", "jaccard_best_head")] + 0.05
    # evaluated rows are merged into the run's metrics.json next to the k-NN rows
    stored = {(r["eval"], r["metric"]) for r in result.run_dir.read_metrics()}
    assert ("knn", "top1") in stored and ("seg", "patch_probe_miou") in stored


def test_linear_probe_on_a_real_short_run(tmp_path_factory, runs):
    """Linear probe (C chosen on held-out train features) on the SimCLR run: well above chance (0.1) on
    CIFAR-10 test images, for the trained encoder and for random init; rows merge into metrics.json."""
    result = _train("simclr", tmp_path_factory, runs)
    ev = evaluate_run(result.run_dir.path, ["evals=linear", "eval.linear_c_grid=[0.1,1.0]"])  # 2 of the 4 default Cs
    m = {(r["eval"], r["metric"]): r["value"] for r in ev.metrics}
    print(f"linear top-1: simclr {m[('linear', 'top1')]:.4f}  random init {m[('linear@init', 'top1')]:.4f}")
    for e in ("linear", "linear@init"):
        assert 0.2 < m[(e, "top1")] <= m[(e, "top5")] <= 1.0
    assert m[("linear", "C")] in (0.1, 1.0)
    assert ("linear", "top1") in {(r["eval"], r["metric"]) for r in result.run_dir.read_metrics()}
