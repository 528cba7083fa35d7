"""Paper-ready figures (seaborn) from the tidy results: PDF + PNG, one-column width, 8 pt fonts.

Every figure labels its axes from one table of metric names (``report/metrics.py``: "k-NN top-1 (%)"), says
how many seeds stand behind each mark and what the error bars are, and tells methods apart by colour (a
colour-blind palette without its near-duplicate orange/vermillion pair) *and* by hatch, marker or line style.
"""

from __future__ import annotations

import functools
import io
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_bench.atomic import write_atomic
from ssl_bench.errors import UserError
from ssl_bench.report.metrics import metric
from ssl_bench.report.tables import row_labels

# matplotlib and seaborn (~0.9 s to import) are loaded by the first figure, not by every command that
# imports the CLI: _load() binds these names
plt: Any = None
sns: Any = None
MaxNLocator: Any = None


def _load() -> None:
    global plt, sns, MaxNLocator
    if plt is not None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import seaborn
    from matplotlib.ticker import MaxNLocator as locator

    plt, sns, MaxNLocator = matplotlib.pyplot, seaborn, locator


log = logging.getLogger(__name__)
for _noisy in ("fontTools", "matplotlib.font_manager", "matplotlib.backends"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)  # font subsetting logs ~100 lines per PDF at INFO

METHOD_ORDER = ["dino", "byol", "simclr", "moco", "moco_v3", "swav"]
# seaborn "colorblind" indices: 3 (vermillion) is too close to 1 (orange) to sit beside it, so it comes last
_COLOR_ORDER = [0, 1, 2, 4, 9, 5, 6, 7, 8, 3]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
_DASHES = ["", (4, 1.5), (1, 1), (3, 1, 1, 1), (5, 2, 1, 2), (2, 2), (6, 1), (1, 2), (3, 3), (4, 1, 1, 1, 1, 1)]
_HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||"]
ONE_COLUMN = 3.3  # inches, two-column paper
RC: dict[Any, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
}
ERRORBAR_NOTE = "mean ± std over seeds"


def _ordered(names) -> list[str]:
    names = set(names)
    return [m for m in METHOD_ORDER if m in names] + sorted(n for n in names if n not in METHOD_ORDER)


def _style(i: int) -> dict:
    """The i-th of ten distinct styles: colour, marker, dash pattern and hatch."""
    _load()
    i %= 10
    color = sns.color_palette("colorblind", 10)[_COLOR_ORDER[i]]
    return {"color": color, "marker": _MARKERS[i], "dashes": _DASHES[i], "hatch": _HATCHES[i]}


def method_styles(methods) -> dict[str, dict]:
    """A fixed colour, marker, dash pattern and hatch per method (the same method looks the same in every
    figure); names outside the known methods take the next unused style."""
    out, extra = {}, len(METHOD_ORDER)
    for m in _ordered(methods):
        i = METHOD_ORDER.index(m) if m in METHOD_ORDER else extra
        extra += m not in METHOD_ORDER
        out[m] = _style(i)
    return out


def _lines(ax, data: pd.DataFrame, y: str, hue: str, order: list[str], styles: dict[str, dict]) -> None:
    """One line per ``hue`` value in ``order`` against epoch (mean, band = std), each in its own style."""
    sns.lineplot(
        data=data,
        x="epoch",
        y=y,
        hue=hue,
        style=hue,
        hue_order=order,
        style_order=order,
        palette={s: styles[s]["color"] for s in order},
        markers={s: styles[s]["marker"] for s in order},
        dashes={s: styles[s]["dashes"] for s in order},
        errorbar="sd",
        markersize=3.5,
        lw=1,
        ax=ax,
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers


def method_palette(methods) -> dict[str, tuple]:
    return {m: s["color"] for m, s in method_styles(methods).items()}


def _write_bytes(f, data: bytes) -> None:
    f.write(data)


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write NAME.pdf and NAME.png atomically."""
    _load()
    paths = []
    for ext in ("pdf", "png"):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=200, bbox_inches="tight")
        path = Path(out_dir) / f"{name}.{ext}"
        write_atomic(path, functools.partial(_write_bytes, data=buf.getvalue()), mode="wb")
        paths.append(path)
    plt.close(fig)
    return paths


def _scale(column: str) -> float:
    return 100.0 if metric(column).kind == "fraction" else 1.0


def _n_text(counts) -> str:
    lo, hi = int(min(counts)), int(max(counts))
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def bar_chart(df: pd.DataFrame, out_dir, eval_name: str = "knn", metric_name: str = "top1") -> list[Path]:
    """One bar per table row (``tables.row_labels``: the method plus every setting that differs, as in
    ``report``): mean over seeds, error bar = std over seeds, n on the bar; a dashed mark over each bar at
    its own row's random-init number."""
    _load()

    column = f"{eval_name}/{metric_name}"
    both = df[df["eval"].isin([eval_name, f"{eval_name}@init"]) & (df["metric"] == metric_name)]
    if not (both["eval"] == eval_name).any():
        raise UserError(f"no {column} results to plot")
    scale = _scale(column)
    both = both.assign(bar=row_labels(both).str.replace(" ", "\n"), value=both["value"] * scale)
    d = both[both["eval"] == eval_name]
    agg = (
        d.groupby("bar", sort=False)
        .agg(method=("method", "first"), mean=("value", "mean"), std=("value", "std"), n=("value", "count"))
        .reset_index()
    )
    agg["std"] = agg["std"].fillna(0.0)
    order = sorted(agg.index, key=lambda i: (_ordered(agg["method"]).index(agg.at[i, "method"]), agg.at[i, "bar"]))
    agg = agg.loc[order].reset_index(drop=True)
    styles = method_styles(agg["method"])
    # each bar's own random-init number: the @init rows of the same table row
    init_mean = both[both["eval"] == f"{eval_name}@init"].groupby("bar")["value"].mean()
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(max(ONE_COLUMN, 0.45 * len(agg) + 0.8), 2.3))
        for i, r in agg.iterrows():
            st = styles[r["method"]]
            ax.bar(i, r["mean"], 0.7, color=st["color"], hatch=st["hatch"], edgecolor="white", linewidth=0)
            ax.errorbar(i, r["mean"], yerr=r["std"] if r["n"] > 1 else None, color="0.15", capsize=2, lw=0.8)
            if r["bar"] in init_mean.index:
                ax.hlines(
                    init_mean[r["bar"]],
                    i - 0.42,
                    i + 0.42,
                    colors="0.1",
                    linestyles="--",
                    lw=0.9,
                    label="random init (each bar's own)" if i == 0 else "_nolegend_",
                )
        ticks = [f"{b}\nn={n}" for b, n in zip(agg["bar"], agg["n"])]
        ax.set_xticks(
            range(len(agg)), ticks, rotation=30 if len(agg) > 6 else 0, ha="right" if len(agg) > 6 else "center"
        )
        ax.set_xlim(-0.6, len(agg) - 0.4)
        ax.set_ylabel(metric(column).axis_label())
        ax.set_ylim(0, max((agg["mean"] + agg["std"]).max(), init_mean.max() if len(init_mean) else 0) * 1.12)
        note = f"bars: {ERRORBAR_NOTE}, n seeds under each bar"
        if len(init_mean):
            ax.legend(
                frameon=False,
                loc="lower left",
                bbox_to_anchor=(0, 1.0),
                fontsize=6,
                title=note,
                title_fontsize=6,
                alignment="left",
            )
        else:
            ax.set_title(note, fontsize=6, loc="left")
        sns.despine(fig)
        return save_figure(fig, out_dir, f"bar_{eval_name}_{metric_name}")


def _grouped(logs: pd.DataFrame, y: str) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """``logs`` rows with ``y`` and a ``group`` column (each table row's label with its n runs), the groups
    in order, and a style per group: the method's own when a method has one group, else one each."""
    d = logs.dropna(subset=[y])
    labels = row_labels(d)
    n = d.assign(_g=labels).groupby("_g")["run_id"].nunique().to_dict() if "run_id" in d.columns else {}
    d = d.assign(group=[f"{g} (n={n[g]})" if g in n else g for g in labels], _g=labels)
    method_of = dict(zip(d["group"], d["method"]))
    groups = sorted(method_of, key=lambda g: (_ordered(method_of.values()).index(method_of[g]), g))
    per_method = pd.Series(method_of).value_counts()
    if (per_method == 1).all():
        by_method = method_styles(method_of.values())
        styles = {g: by_method[method_of[g]] for g in groups}
    else:
        styles = {g: _style(i) for i, g in enumerate(groups)}
    return d, groups, styles


def curves(
    logs: pd.DataFrame,
    out_dir,
    y: str,
    name: str,
    log_k: float | None = None,
    ylabel: str | None = None,
    baseline: dict[str, float] | None = None,
) -> list[Path]:
    """One line per table row (``tables.row_labels``: runs that differ only in seed; mean, band = std over
    seeds, n in the legend) of ``y`` against epoch, each with its own colour, marker and dash pattern;
    ``baseline``: each run's random-init number (by run id); a dashed line per table row at its runs' mean,
    in the row's colour (one black line when they all agree)."""
    _load()
    if logs.empty or y not in logs.columns:
        raise UserError(f"no per-epoch '{y}' in the training logs (k-NN curves need eval.knn_every=N)")
    scale = _scale(y)
    d, groups, styles = _grouped(logs, y)
    d = d.assign(**{y: d[y] * scale})
    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(ONE_COLUMN, 2.2))
        _lines(ax, d, y, "group", groups, styles)
        if log_k is not None:
            ax.axhline(log_k, ls=":", color="0.3", lw=0.8)
            ax.text(ax.get_xlim()[0], log_k, " ln(out_dim)", va="bottom", fontsize=6, color="0.3")
        inits = d.assign(_init=d["run_id"].map(baseline or {})).drop_duplicates("run_id").dropna(subset=["_init"])
        own = inits.groupby("group")["_init"].mean().to_dict() if "run_id" in d.columns else {}
        if own and len(set(own.values())) == 1:
            ax.axhline(next(iter(own.values())) * scale, ls="--", color="0.1", lw=0.9, label="random init")
        for i, (g, v) in enumerate(own.items() if len(set(own.values())) > 1 else ()):
            label = "random init (each line's own)" if i == 0 else "_nolegend_"
            ax.axhline(v * scale, ls="--", color=styles[g]["color"], lw=0.8, label=label)
        ax.set_ylabel(ylabel or metric(y).axis_label())
        ax.legend(frameon=False, title="band: std over seeds", title_fontsize=6)
        sns.despine(fig)
        return save_figure(fig, out_dir, name)


def loss_panels(logs: pd.DataFrame, out_dir, name: str = "loss_curve") -> list[Path]:
    """Training loss, one panel per method (the methods' losses are different quantities on different
    scales, so they never share an axis), one line per table row of that method (``tables.row_labels``)."""
    _load()
    if logs.empty or "loss" not in logs.columns:
        raise UserError("no per-epoch 'loss' in the training logs")
    d, groups, styles = _grouped(logs, "loss")
    methods = _ordered(d["method"].unique())
    cols = min(3, len(methods))
    rows = math.ceil(len(methods) / cols)
    with plt.rc_context(RC):
        fig, axes = plt.subplots(rows, cols, figsize=(ONE_COLUMN / 3 * 2 * cols, 1.6 * rows), squeeze=False)
        for ax, m in zip(axes.flat, methods):
            mine = [g for g in groups if (d.loc[d["group"] == g, "method"] == m).all()]
            _lines(ax, d[d["method"] == m], "loss", "group", mine, styles)
            ax.set_title(m if len(mine) > 1 else mine[0], fontsize=7)
            if len(mine) > 1:
                ax.legend(frameon=False, fontsize=5)
            elif ax.get_legend():
                ax.get_legend().remove()
            ax.set_ylabel(metric("loss").axis_label() if ax in axes[:, 0] else "")
        for ax in list(axes.flat)[len(methods) :]:
            ax.axis("off")
        fig.suptitle(f"{ERRORBAR_NOTE} (band)", fontsize=6.5, color="0.3", x=0.01, ha="left")
        fig.tight_layout()
        sns.despine(fig)
        return save_figure(fig, out_dir, name)


def ablation_figure(
    logs: pd.DataFrame,
    out_dir,
    diagnostics: list[str],
    ceiling: float | None = None,
    ceiling_label: str = "ln(out_dim)",
    name: str = "ablation",
    order: list[str] | None = None,
) -> list[Path]:
    """One panel per diagnostic (DINO Fig. 7: teacher entropy and KL(teacher || student)) against epoch,
    one line per variant, each with its own colour, marker and dash pattern; ``ceiling``: a dotted line at
    ln(ceiling) on the first panel (the entropy of a uniform output)."""
    _load()
    if logs.empty or "variant" not in logs.columns:
        raise UserError("no ablation runs with training logs to plot")
    variants = [v for v in (order or []) if v in set(logs["variant"])]
    variants += sorted(v for v in set(logs["variant"]) if v not in variants)
    styles = {v: _style(i) for i, v in enumerate(variants)}
    cols = [c for c in diagnostics if c in logs.columns]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, len(cols), figsize=(ONE_COLUMN * len(cols), 2.2), squeeze=False)
        for ax, col in zip(axes[0], cols):
            _lines(ax, logs, col, "variant", variants, styles)
            ax.set_ylabel(metric(col).axis_label())
            ax.legend(frameon=False, title=None, fontsize=6)
        if ceiling:
            ax0 = axes[0][0]
            ax0.axhline(math.log(ceiling), ls=":", color="0.3", lw=0.8)
            ax0.text(
                ax0.get_xlim()[1],
                math.log(ceiling),
                f"{ceiling_label} ",
                va="bottom",
                ha="right",
                fontsize=6,
                color="0.3",
            )
            ax0.set_ylim(top=math.log(ceiling) * 1.12)  # room for the label above the ceiling
        sns.despine(fig)
        return save_figure(fig, out_dir, name)


def attention_grid(images, attn_maps, out_dir, name: str = "attention") -> list[Path]:
    """Rows = images; first column the image, then one column per head (CLS-to-patch attention, each map
    scaled from its own minimum to its own maximum), with one colour bar for the scale."""
    _load()
    n, heads = len(images), attn_maps[0].shape[0]
    with plt.rc_context(RC):
        fig, axes = plt.subplots(n, heads + 1, figsize=(0.9 * (heads + 1) + 0.5, 0.9 * n), squeeze=False)
        im = None
        for i, (img, att) in enumerate(zip(images, attn_maps)):
            axes[i, 0].imshow(img)
            if i == 0:
                axes[i, 0].set_title("image", fontsize=6)
            for h in range(heads):
                lo, hi = float(att[h].min()), float(att[h].max())
                a = (att[h] - lo) / max(hi - lo, 1e-12)  # each map spans the colour scale
                im = axes[i, h + 1].imshow(a, cmap="inferno", vmin=0, vmax=1)
                if i == 0:
                    axes[i, h + 1].set_title(f"head {h}", fontsize=6)
            for ax in axes[i]:
                ax.axis("off")
        fig.subplots_adjust(wspace=0.05, hspace=0.05, right=0.9)
        cax = fig.add_axes((0.92, 0.15, 0.015, 0.7))
        assert im is not None  # at least one image and one head
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("attention (each map: its min to its max)", fontsize=6)
        cb.ax.tick_params(labelsize=5)
        return save_figure(fig, out_dir, name)
