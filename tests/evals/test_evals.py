import numpy as np
import pytest
import torch

from ssl_bench.evals.linear import fit_linear_probe
from ssl_bench.evals.segmentation import attention_mass_mask, jaccard, miou


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 4
    ytr, yte = np.arange(400) % 4, np.arange(200) % 4
    xtr = centers[ytr] + rng.normal(size=(400, 16)) * 0.3
    xte = centers[yte] + rng.normal(size=(200, 16)) * 0.3
    res = fit_linear_probe(xtr, ytr, xte, yte, [0.1, 1.0])
    assert res["top1"] == 1.0 and res["top5"] == 1.0
    yr = rng.integers(0, 10, 2000)
    res = fit_linear_probe(rng.normal(size=(2000, 8)), yr, rng.normal(size=(1000, 8)), rng.integers(0, 10, 1000), [1.0])
    assert 0.05 < res["top1"] < 0.16


def test_jaccard_and_miou_by_hand():
    a = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    assert jaccard(a, a) == 1.0
    assert jaccard(a, ~a) == 0.0
    b = torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)
    assert jaccard(b, a) == 0.5
    # fg IoU 1/2, bg IoU 2/3
    assert miou(b, a) == pytest.approx(0.5 * (0.5 + 2 / 3))


def test_attention_mass_threshold_on_known_vector():
    attn = torch.tensor([0.5, 0.05, 0.3, 0.15])
    # 60% of the mass: 0.5 alone is not enough, 0.5 + 0.3 is -> the two largest
    assert attention_mass_mask(attn, 0.6).tolist() == [True, False, True, False]
    # 50% is reached by the largest alone... DINO's rule keeps entries whose ascending cumsum > 1 - mass
    assert attention_mass_mask(attn, 0.45).tolist() == [True, False, False, False]
    assert attention_mass_mask(attn, 1.0).all()
    # unnormalised input gives the same set
    assert torch.equal(attention_mass_mask(attn * 7, 0.6), attention_mass_mask(attn, 0.6))


def test_attention_equal_to_mask_gives_jaccard_one():
    from ssl_bench.evals.segmentation import _upsample

    attn = torch.zeros(16)
    attn[[0, 1, 4, 5]] = 0.25  # top-left 2x2 patches of a 4x4 grid
    keep = attention_mass_mask(attn + 1e-9, 0.6).reshape(4, 4)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4, :4] = True
    # the 60% set is 3 of the 4 equal patches (ties): Jaccard 0.75; with mass 1.0 minus the zeros -> 1.0
    assert jaccard(_upsample(keep, 8), mask) == pytest.approx(0.75)
    keep_all = (attn > 0).reshape(4, 4)
    assert jaccard(_upsample(keep_all, 8), mask) == 1.0
    assert jaccard(_upsample(~keep_all, 8), mask) == 0.0


def test_linear_probe_non_convergence_is_one_log_line_not_a_console_warning(caplog, monkeypatch):
    """scikit-learn's multi-line ConvergenceWarning (here forced by 3 iterations) becomes one log line."""
    import logging
    import warnings

    import ssl_bench.evals.linear as L

    monkeypatch.setattr(L, "MAX_ITER", 3)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(400, 300)), rng.integers(0, 10, 400)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping the probe fails the test
        with caplog.at_level(logging.INFO, logger="ssl_bench.evals.linear"):
            res = fit_linear_probe(x, y, x[:50], y[:50], [1e6])
    assert 0.0 <= res["top1"] <= 1.0
    assert any("before converging" in r.message for r in caplog.records)


def test_warm_started_linear_probe_equals_cold_start_fits():
    """The C path is warm-started (ascending C, refit from the held-out fit); on overlapping classes it
    picks the same C and reaches the same test accuracy as independent cold-start fits."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from ssl_bench.evals.linear import fit_linear_probe

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(5, 20))

    def sample(n):
        y = rng.integers(0, 5, n)
        return centers[y] + 1.5 * rng.normal(size=(n, 20)), y

    xtr, ytr = sample(600)
    xte, yte = sample(400)
    grid = [0.001, 0.01, 0.1, 1.0, 10.0]
    res = fit_linear_probe(xtr, ytr, xte, yte, grid)
    sc = StandardScaler().fit(xtr)
    a, b, ya, yb = train_test_split(sc.transform(xtr), ytr, test_size=0.1, random_state=0, stratify=ytr)
    accs = [LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(a, ya).score(b, yb) for c in grid]
    assert res["val_top1"] == pytest.approx(max(accs), abs=1e-9)
    ref_c = grid[int(np.argmax(accs))]
    assert res["C"] == ref_c
    ref = LogisticRegression(C=ref_c, max_iter=5000, tol=1e-8).fit(sc.transform(xtr), ytr).score(sc.transform(xte), yte)
    assert res["top1"] == pytest.approx(ref, abs=0.005)
    assert 0.3 < res["top1"] < 1.0  # overlapping classes: neither trivial nor chance


def test_torch_linear_probe_solves_scikit_learn_s_problem():
    """eval.linear_solver=torch (the GPU path) minimises scikit-learn's objective: on overlapping classes it
    picks the same C, the same weights (to 1e-3 of their scale) and the same test scores; "auto" means torch on
    a GPU and scikit-learn on the CPU."""
    from types import SimpleNamespace

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ssl_bench.evals.linear import _torch_fit, fit_linear_probe_torch, linear_solver

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(5, 24))
    ytr, yte = np.arange(1500) % 5, np.arange(500) % 5
    xtr = (centers[ytr] + rng.normal(size=(1500, 24)) * 1.5) * rng.uniform(0.5, 3, 24)
    xte = (centers[yte] + rng.normal(size=(500, 24)) * 1.5) * rng.uniform(0.5, 3, 24)
    grid = [0.001, 0.01, 0.1, 1.0]
    ref = fit_linear_probe(xtr, ytr, xte, yte, grid)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)
    got = fit_linear_probe_torch(t(xtr), torch.as_tensor(ytr), t(xte), torch.as_tensor(yte), grid)
    assert got["C"] == ref["C"] and got["val_top1"] == pytest.approx(ref["val_top1"])
    assert abs(got["top1"] - ref["top1"]) <= 2 / 500 and abs(got["top5"] - ref["top5"]) <= 2 / 500
    x = StandardScaler().fit_transform(xtr)
    clf = LogisticRegression(C=0.05, max_iter=1000, tol=1e-8).fit(x, ytr)
    w, b = _torch_fit(t(x), torch.as_tensor(ytr), 5, 0.05)
    # multinomial weights are defined up to a constant per feature: compare centred over classes
    ours, theirs = w.T.numpy() - w.T.numpy().mean(0), clf.coef_ - clf.coef_.mean(0)
    assert np.abs(ours - theirs).max() < 1e-3 * np.abs(theirs).max()
    cfg = lambda s: SimpleNamespace(eval=SimpleNamespace(linear_solver=s))
    assert linear_solver(cfg("auto"), torch.device("cuda")) == "torch"
    assert linear_solver(cfg("auto"), torch.device("cpu")) == "sklearn"
    assert linear_solver(cfg("torch"), torch.device("cpu")) == "torch"
