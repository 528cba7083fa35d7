"""Paper-ready figures (seaborn) from the tidy results: PDF + PNG, one-column width, 8 pt fonts,
one fixed colour per method across every figure."""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ssl_bench.atomic import write_atomic  # noqa: E402
from ssl_bench.errors import UserError  # noqa: E402

log = logging.getLogger(__name__)

METHOD_ORDER = ["dino", "byol", "simclr", "moco", "swav"]
ONE_COLUMN = 3.3  # inches, two-column paper
RC = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
      "legend.fontsize": 7, "pdf.fonttype": 42, "ps.fonttype": 42}


def method_palette(methods) -> dict[str, tuple]:
    names = list(dict.fromkeys([m for m in METHOD_ORDER if m in set(methods)] + sorted(set(methods))))
    colors = sns.color_palette("colorblind", max(len(METHOD_ORDER), len(names)))
    fixed = {m: colors[i] for i, m in enumerate(METHOD_ORDER)}
    extra = iter(colors[len(METHOD_ORDER):] + sns.color_palette("dark", 10))
    return {m: fixed.get(m) or next(extra) for m in names}


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write NAME.pdf and NAME.png atomically."""
    paths = []
    for ext in ("pdf", "png"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=200, bbox_inches="tight")
        path = Path(out_dir) / f"{name}.{ext}"
        write_atomic(path, lambda f, b=buf.getvalue(): f.write(b), mode="wb")
        paths.append(path)
    plt.close(fig)
    return paths


def bar_chart(df: pd.DataFrame, out_dir, eval_name: str = "knn", metric: str = "top1") -> list[Path]:
    """Mean over seeds per method (x backbone), error bars = std over seeds, random init as a dashed line."""
    d = df[(df["eval"] == eval_name) & (df["metric"] == metric)]
    if d.empty:
        raise UserError(f"no {eval_name}/{metric} results to plot")
    d = d.assign(model=d["method"] + " / " + d["backbone"])
    pal = method_palette(d["method"])
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.2))
        order = sorted(d["model"].unique(), key=lambda s: (METHOD_ORDER.index(s.split(" / ")[0])
                                                            if s.split(" / ")[0] in METHOD_ORDER else 99, s))
        colors = [pal[m.split(" / ")[0]] for m in order]
        sns.barplot(data=d, x="model", y="value", order=order, hue="model", hue_order=order, palette=colors,
                    errorbar="sd", capsize=0.2, err_kws={"linewidth": 0.8}, ax=ax, legend=False)
        base = df[(df["eval"] == f"{eval_name}@init") & (df["metric"] == metric)]
        if not base.empty:
            ax.axhline(base["value"].mean(), ls="--", color="0.4", lw=0.8, label="random init")
            ax.legend(frameon=False)
        ax.set_xlabel("")
        ax.set_ylabel(f"{eval_name} {metric}")
        ax.tick_params(axis="x", rotation=30)
        sns.despine(fig)
        return save_figure(fig, out_dir, f"bar_{eval_name}_{metric}")


def curves(logs: pd.DataFrame, out_dir, y: str, name: str, hue: str = "method", log_k: float | None = None,
           ylabel: str | None = None) -> list[Path]:
    """One line per ``hue`` value (mean over seeds, band = std) of ``y`` against epoch."""
    if logs.empty or y not in logs.columns:
        raise UserError(f"no per-epoch '{y}' in the training logs (k-NN curves need eval.knn_every=N)")
    d = logs.dropna(subset=[y])
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.2))
        palette = method_palette(d[hue]) if hue == "method" else "colorblind"
        sns.lineplot(data=d, x="epoch", y=y, hue=hue, palette=palette, errorbar="sd", marker="o", markersize=3,
                     lw=1, ax=ax)
        if log_k is not None:
            ax.axhline(log_k, ls=":", color="0.3", lw=0.8)
            ax.text(ax.get_xlim()[0], log_k, " ln(out_dim)", va="bottom", fontsize=6, color="0.3")
        ax.set_ylabel(ylabel or y)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.legend(frameon=False, title=None)
        sns.despine(fig)
        return save_figure(fig, out_dir, name)


def ablation_figure(logs: pd.DataFrame, out_dir, out_dim: int, name: str = "ablation_dino") -> list[Path]:
    """DINO Fig. 7 analogue: teacher entropy and KL(teacher || student) per epoch, one line per variant."""
    if logs.empty or "variant" not in logs.columns:
        raise UserError("no ablation runs with training logs to plot")
    pal = sns.color_palette("colorblind", logs["variant"].nunique())
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(2 * ONE_COLUMN, 2.2))
        for ax, (col, label) in zip(axes, [("teacher_entropy", "teacher entropy (nats)"),
                                           ("kl", "KL(teacher ‖ student)")]):
            sns.lineplot(data=logs, x="epoch", y=col, hue="variant", palette=pal, errorbar="sd", marker="o",
                         markersize=3, lw=1, ax=ax)
            ax.set_ylabel(label)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(frameon=False, title=None, fontsize=6)
        axes[0].axhline(math.log(out_dim), ls=":", color="0.3", lw=0.8)
        axes[0].text(axes[0].get_xlim()[1], math.log(out_dim), "ln(out_dim) ", va="bottom", ha="right", fontsize=6,
                     color="0.3")
        axes[0].set_ylim(top=math.log(out_dim) * 1.12)  # room for the label above the ceiling
        sns.despine(fig)
        return save_figure(fig, out_dir, name)


def attention_grid(images, attn_maps, out_dir, name: str = "attention") -> list[Path]:
    """Rows = images; first column the image, then one column per head (CLS-to-patch attention)."""
    n, heads = len(images), attn_maps[0].shape[0]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(n, heads + 1, figsize=(0.9 * (heads + 1), 0.9 * n), squeeze=False)
        for i, (img, att) in enumerate(zip(images, attn_maps)):
            axes[i, 0].imshow(img)
            for h in range(heads):
                axes[i, h + 1].imshow(att[h], cmap="inferno")
                if i == 0:
                    axes[i, h + 1].set_title(f"head {h}", fontsize=6)
            for ax in axes[i]:
                ax.axis("off")
        fig.subplots_adjust(wspace=0.05, hspace=0.05)
        return save_figure(fig, out_dir, name)
