"""One table of metric names: the label and unit a reader sees for each ``eval/metric`` column, in tables
and figures alike. Fractions are shown as percentages in figures; booleans are counted (``1/3``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    label: str  # without the unit
    kind: str = "fraction"  # fraction (shown in %), bool (counted), number (as is)
    unit: str = ""  # for kind=number

    def axis_label(self) -> str:
        unit = "%" if self.kind == "fraction" else self.unit
        return f"{self.label} ({unit})" if unit else self.label


METRICS: dict[str, Metric] = {
    "knn/top1": Metric("k-NN top-1"),
    "knn/top5": Metric("k-NN top-5"),
    "linear/top1": Metric("linear top-1"),
    "linear/top5": Metric("linear top-5"),
    "linear/val_top1": Metric("linear top-1, validation"),
    "linear/C": Metric("linear probe C", "number"),
    "seg/jaccard_best_head": Metric("attention Jaccard, best head"),
    "seg/jaccard_mean_heads": Metric("attention Jaccard, heads averaged"),
    "seg/best_head": Metric("best attention head", "number"),
    "seg/patch_probe_miou": Metric("patch-probe mIoU"),
    "train/collapsed": Metric("collapsed", "bool"),
    "train/final_loss": Metric("final training loss", "number"),
    "train/wall_time_s": Metric("training time", "number", "s"),
    "train/images_per_s": Metric("training speed", "number", "img/s"),
    # per-epoch log columns
    "loss": Metric("training loss", "number"),
    "knn_top1": Metric("k-NN top-1"),
    "teacher_entropy": Metric("teacher entropy", "number", "nats"),
    "kl": Metric("KL(teacher ‖ student)", "number", "nats"),
}


def metric(column: str) -> Metric:
    """The entry for ``eval/metric`` (``knn@init/top1`` reads as random init), or the raw name as a number."""
    ev, sep, name = column.partition("/")
    if ev.endswith("@init"):
        base = metric(f"{ev[: -len('@init')]}/{name}")
        return Metric(f"{base.label}, random init", base.kind, base.unit)
    if column in METRICS:
        return METRICS[column]
    if ev == "knn" and name.startswith("top1_k"):
        return Metric(f"k-NN top-1 (k={name[len('top1_k') :]})")
    return Metric(column.replace("_", " "), "number")
