"""Checks run before training, so that an evaluation that cannot succeed fails in seconds, not after
hours of training: every evaluation image decodes, the linear probe has two classes, masks exist."""

from __future__ import annotations

import logging

from ssl_bench.config import RunConfig
from ssl_bench.data.datasets import DataSplits, targets_of
from ssl_bench.errors import UserError
from ssl_bench.evals.segmentation import seg_pairs

log = logging.getLogger(__name__)


def preflight(cfg: RunConfig, splits: DataSplits) -> None:
    names = cfg.eval.evals
    if not names:
        return
    if "linear" in names:
        assert splits.bank is not None  # labelled: run_datasets refuses linear on unlabelled data
        classes = set(targets_of(splits.bank))
        if len(classes) < 2:
            raise UserError(
                f"the linear probe needs at least 2 classes in the training split; dataset "
                f"{cfg.dataset!r} has {len(classes)} (drop linear from evals)"
            )
    if "seg" in names:
        pairs = seg_pairs(cfg)
        for i in range(len(pairs)):
            pairs[i]  # decodes the image and its mask; a bad file is a UserError naming it
    for i in range(len(splits.test)):
        splits.test[i]  # decodes: a broken test image is named now, not after training
    log.info("preflight: %d evaluation images read%s", len(splits.test), " and the masks" if "seg" in names else "")
