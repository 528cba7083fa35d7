"""Linear probe on a frozen encoder (DINO's eval_linear.py protocol, two paths).

Fast path (default): multinomial logistic regression (L-BFGS) on cached, standardised features (ViT: CLS
token, optionally concatenated with the mean patch token; ResNet: pooled features): scikit-learn's on the
CPU, the same objective solved with torch's L-BFGS on the training device when that is a GPU
(``eval.linear_solver``; 50,000 x 2,048 features in seconds instead of minutes).
The inverse regularisation C is chosen from ``eval.linear_c_grid`` on a held-out 10% of the training
split (stratified, seed 0), then the probe is refit on the whole training split; test is never used
for choices. Augmented path (``eval.linear_augmented=true``): a linear layer trained with SGD
(momentum 0.9, cosine LR, no weight decay) on random-resized-crop + flip inputs through the frozen
encoder, as in DINO's paper-grade evaluation.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from ssl_bench.data.datasets import TransformDataset, targets_of
from ssl_bench.dist import is_main
from ssl_bench.evals.features import EvalContext, split_features
from ssl_bench.registry import register_eval

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)
MAX_ITER = 1000


def _topk(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def _fit(c: float, x: np.ndarray, y: np.ndarray, init: LogisticRegression | None = None) -> LogisticRegression:
    """L-BFGS, ``MAX_ITER`` iterations, started from ``init``'s solution when given (the problem is
    strictly convex, so only the iteration count changes: the C path from strong to weak regularisation
    and the refit from the held-out fit take a fraction of the cold-start iterations). Not converging
    (weakly regularised C on many features) is logged once per fit instead of scikit-learn's warning."""
    from sklearn.exceptions import ConvergenceWarning  # scikit-learn only when a probe is fit (1 s to import)
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=MAX_ITER, warm_start=init is not None)
    if init is not None:
        clf.coef_, clf.intercept_ = init.coef_.copy(), init.intercept_.copy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x, y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            log.info("linear probe: L-BFGS stopped at %d iterations before converging (C=%g)", MAX_ITER, c)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return clf


def _choose_c(y: np.ndarray, c_grid: list[float], seed: int, fit, val_acc, progress: bool = False):
    """The protocol both solvers share: hold out a stratified 10% of train (seed ``seed``), fit each C in
    ascending order warm-started from the previous fit, keep the best held-out accuracy (ties: the stronger
    regularisation), refit that C on all of train from its held-out fit. ``fit(c, rows, init)`` (rows None: all
    of train) and ``val_acc(model, rows)`` are the solver's; returns (model, C, held-out top-1)."""
    strat = y if np.bincount(y).min() >= 2 else None
    from sklearn.model_selection import train_test_split

    fit_rows, val_rows = train_test_split(np.arange(len(y)), test_size=0.1, random_state=seed, stratify=strat)
    best, prev, best_fit, best_c = -1.0, None, None, None
    for c in tqdm(sorted(c_grid), desc="linear probe: C grid", leave=False, disable=not progress):
        prev = fit(c, fit_rows, prev)
        acc = val_acc(prev, val_rows)
        if acc > best:
            best_c, best, best_fit = c, acc, prev
    return fit(best_c, None, best_fit), best_c, best


def fit_linear_probe(
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    yte: np.ndarray,
    c_grid: list[float],
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Choose C on a held-out 10% of train, refit on all of train, report test top-1/top-5."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)

    def fit(c: float, rows, init) -> LogisticRegression:
        return _fit(c, xtr, ytr, init) if rows is None else _fit(c, xtr[rows], ytr[rows], init)

    clf, best_c, best = _choose_c(ytr, c_grid, seed, fit, lambda clf, rows: clf.score(xtr[rows], ytr[rows]), progress)
    scores = clf.predict_proba(xte)
    y_idx = np.searchsorted(clf.classes_, yte)
    return {"top1": _topk(scores, y_idx, 1), "top5": _topk(scores, y_idx, 5), "C": best_c, "val_top1": best}


def _torch_fit(x: Tensor, y: Tensor, n_cls: int, c: float, init: tuple[Tensor, Tensor] | None = None):
    """scikit-learn's multinomial objective, mean cross-entropy + ||W||^2 / (2 C n) (intercept not penalised),
    minimised with torch's L-BFGS (strong Wolfe line search, history 10 as scipy's) until the largest gradient
    entry is below scikit-learn's tol 1e-4, at most ``MAX_ITER`` iterations; warm-started from ``init``."""
    w = (init[0].clone() if init else x.new_zeros(x.shape[1], n_cls)).requires_grad_()
    b = (init[1].clone() if init else x.new_zeros(n_cls)).requires_grad_()
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=MAX_ITER,
        tolerance_grad=1e-4,
        tolerance_change=0.0,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    reg = 1.0 / (2 * c * x.shape[0])

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, x, w), y) + reg * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def fit_linear_probe_torch(
    xtr: Tensor,
    ytr: Tensor,
    xte: Tensor,
    yte: Tensor,
    c_grid: list[float],
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> dict[str, float]:
    """:func:`fit_linear_probe` (same held-out split, C path, refit and scores) solved with torch on
    ``device``: the path for a GPU."""
    dev = torch.device(device or xtr.device)
    xtr, xte = xtr.to(dev, torch.float32), xte.to(dev, torch.float32)
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
    std = torch.where(std == 0, 1.0, std)  # StandardScaler: a constant feature is left unscaled
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    classes, y_all = torch.unique(ytr, return_inverse=True)
    y_all, n_cls = y_all.to(dev), len(classes)

    def fit(c: float, rows, init):
        if rows is None:
            return _torch_fit(xtr, y_all, n_cls, c, init)
        rows = torch.as_tensor(rows, device=dev)
        return _torch_fit(xtr[rows], y_all[rows], n_cls, c, init)

    def val_acc(wb, rows) -> float:
        rows = torch.as_tensor(rows, device=dev)
        return int((torch.addmm(wb[1], xtr[rows], wb[0]).argmax(1) == y_all[rows]).sum()) / len(rows)

    (w, b), best_c, best = _choose_c(ytr.numpy(), c_grid, seed, fit, val_acc, progress)
    scores = torch.addmm(b, xte, w).cpu().numpy()
    y_idx = np.searchsorted(classes.numpy(), yte.numpy())
    return {"top1": _topk(scores, y_idx, 1), "top5": _topk(scores, y_idx, 5), "C": best_c, "val_top1": best}


def linear_solver(cfg, device: torch.device) -> str:
    """``eval.linear_solver``, with "auto" resolved: torch on a GPU, scikit-learn on the CPU."""
    s = cfg.eval.linear_solver
    return ("torch" if device.type == "cuda" else "sklearn") if s == "auto" else s


class ProbeFeatures(nn.Module):
    """The features DINO's linear evaluation reads from a ViT (eval_linear.py): the CLS tokens of the
    last ``n_blocks`` blocks concatenated (``eval.linear_last_blocks``), optionally with the mean patch
    token of the last block (``eval.linear_avgpool``)."""

    def __init__(self, encoder: nn.Module, n_blocks: int, avgpool: bool) -> None:
        super().__init__()
        self.enc, self.n, self.avgpool = encoder, max(n_blocks, 1), avgpool
        self.embed_dim = encoder.embed_dim * (self.n + int(avgpool))

    def forward(self, x: Tensor) -> Tensor:
        blocks = self.enc.last_blocks(x, self.n)
        feats = [cls for _, cls in blocks]
        if self.avgpool:
            feats.append(blocks[-1][0].mean(dim=1))
        return torch.cat(feats, dim=1)


def probe_encoder(encoder: nn.Module, cfg) -> nn.Module:
    """The encoder as the linear probe sees it: ViTs per ``eval.linear_last_blocks`` / ``linear_avgpool``."""
    if getattr(encoder, "is_vit", False) and (cfg.eval.linear_last_blocks > 0 or cfg.eval.linear_avgpool):
        return ProbeFeatures(encoder, cfg.eval.linear_last_blocks, cfg.eval.linear_avgpool)
    return encoder


def _augmented_probe(encoder: nn.Module, ctx: EvalContext) -> dict[str, float]:
    cfg, dev = ctx.cfg, ctx.device
    size = cfg.data.global_size or cfg.backbone.img_size
    aug = T.Compose(
        [
            T.ToImage(),
            T.RandomResizedCrop(size, antialias=True),
            T.RandomHorizontalFlip(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(ctx.splits.mean, ctx.splits.std),
        ]
    )
    ds = TransformDataset(ctx.splits.bank, aug)
    n_cls = int(max(targets_of(ctx.splits.bank))) + 1
    head = nn.Linear(encoder.embed_dim, n_cls).to(dev)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    bs = cfg.eval.batch_size
    opt = torch.optim.SGD(head.parameters(), lr=cfg.eval.linear_lr * bs / 256, momentum=0.9)
    loader = DataLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        num_workers=cfg.data.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.eval.linear_epochs * len(loader))
    encoder.eval()
    for epoch in range(cfg.eval.linear_epochs):
        for x, y in loader:
            with torch.no_grad():
                f = encoder(x.to(dev))
            loss = F.cross_entropy(head(f), y.to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        log.info("linear probe epoch %d/%d loss %.4f", epoch + 1, cfg.eval.linear_epochs, loss.item())
    _, _, xte, yte = split_features(encoder, ctx)
    with torch.no_grad():
        scores = head(xte.to(dev)).cpu().numpy()
    y = yte.numpy()
    return {"top1": _topk(scores, y, 1), "top5": _topk(scores, y, 5)}


@register_eval("linear")
def linear_eval(encoder: nn.Module, ctx: EvalContext) -> list[dict]:
    """Linear probe top-1/top-5 on frozen features (C chosen on held-out train data)."""
    encoder = probe_encoder(encoder, ctx.cfg)
    if ctx.cfg.eval.linear_augmented:
        res = _augmented_probe(encoder, ctx)
    else:
        xtr, ytr, xte, yte = split_features(encoder, ctx)
        grid, seed = ctx.cfg.eval.linear_c_grid, ctx.cfg.seed
        show = bool(ctx.cfg.progress and is_main())
        if linear_solver(ctx.cfg, torch.device(ctx.device)) == "torch":
            res = fit_linear_probe_torch(xtr, ytr, xte, yte, grid, seed, ctx.device, show)
        else:
            res = fit_linear_probe(xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), grid, seed, show)
    return [{"eval": "linear", "metric": k, "value": float(v)} for k, v in res.items()]
