"""Accuracy-vs-cost figures: published top-1 errors placed at *our* computed Params or Flops.

The papers' printed costs are not all reproducible (docs/counting.md), so the x axis is our
count; ``show_paper_costs`` draws the printed cost as a hollow marker joined to ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Annotation, Text
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

from sofar_cost.errors import SofarError
from sofar_cost.models.layers import DATASETS
from sofar_cost.models.registry import PRESETS
from sofar_cost.published import SOURCES, published_with_costs

# metric -> (our cost column, paper cost column, axis label)
METRICS = {
    "flops": ("our_flops", "flops", "Flops, our count (FP MACs + binary MACs / 64)"),
    "params": (
        "our_params_mbit",
        "params_mbit",
        "Params (Mbit), our count (32 bit FP, 1 bit binary)",
    ),
}
DATASET_NAMES = {"imagenet": "ImageNet", "cifar100": "CIFAR-100"}
# family -> (legend name, marker, colour): one look per family in every figure.
FAMILY_STYLE = {
    "bireal": ("Bi-Real ResNet", "o", "#1f77b4"),
    "binarydensenet": ("BinaryDenseNet (Bethge et al.)", "p", "#7f7f7f"),
    "bdn": ("BinaryDenseNet (SoFAR baseline)", "s", "#2ca02c"),
    "rf": ("RF ResNet (SoFAR)", "^", "#d62728"),
    "f": ("F ResNet (ablation: no shortcuts)", "v", "#ff7f0e"),
    "drf": ("DRF DenseNet (SoFAR)", "D", "#9467bd"),
    "df": ("DF DenseNet (ablation: no shortcuts)", "X", "#8c564b"),
    "larq-zoo": ("larq-zoo models (larq-zoo's documented accuracy)", "*", "#e377c2"),
}
SOURCE_NAMES = {
    "sofar": "SoFAR",
    "igp": "IGP",
    "binarydensenet": "BinaryDenseNet",
    "larq-zoo": "larq-zoo",
}
# Label offsets (points) tried in order: right, left, above, below, the diagonals, then
# farther out with a leader line.
_NEAR = [(6, 0), (-6, 0), (0, 7), (0, -7), (6, 6), (6, -6), (-6, 6), (-6, -6)]
_OFFSETS = _NEAR + [(dx * 4 // 3, dy * 2) for dx, dy in _NEAR[4:]]
_OFFSETS += [(dx * 5 // 3, dy * 3) for dx, dy in _NEAR[4:]]


def _check_choice(kind: str, value: object, valid: Sequence[str]) -> None:
    if value not in valid:
        raise SofarError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def pareto_front(costs: Sequence[float], errors: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats: lowest error at or below each cost.

    Sorted by increasing cost (decreasing error); NaN points are ignored, and of points with
    equal cost and error only the first counts.
    """
    costs, errors = np.asarray(costs, float), np.asarray(errors, float)
    valid = ~(np.isnan(costs) | np.isnan(errors))
    order = [i for i in np.lexsort((errors, costs)) if valid[i]]
    front, best = [], math.inf
    for i in order:
        if errors[i] < best:
            front.append(int(i))
            best = errors[i]
    return front


def accuracy_points(
    metric: str = "flops",
    dataset: str = "imagenet",
    source: str | None = "sofar",
    include: Sequence[str] = (),
) -> pd.DataFrame:
    """The points ``plot_accuracy`` draws: binary rows with a preset, one per distinct result.

    ``include`` adds other sources' results (e.g. ``["larq-zoo"]``) beside ``source``'s, all
    at our counts and under one Pareto front.
    Columns: everything of ``published_with_costs`` plus ``label``, ``cost`` (our count),
    ``paper_cost`` (printed, NaN where not printed) and ``on_front`` (Pareto-optimal).
    A result repeated in several tables (same preset, width and error) appears once, as its
    first table gives it.
    """
    _check_choice("metric", metric, list(METRICS))
    _check_choice("dataset", dataset, list(DATASETS))
    for name in [source, *include] if source is not None else include:
        _check_choice("source", name, SOURCES)
    ours, paper, _ = METRICS[metric]
    sources = [source] if source is None else list(dict.fromkeys([source, *include]))
    df = pd.concat(
        [published_with_costs(s, dataset, binary_only=True, drop_unmatched=True) for s in sources],
        ignore_index=True,
    )
    if df.empty:
        raise SofarError(f"no binary results with a preset for source {source!r} on {dataset}")
    df = df.drop_duplicates(["preset", "our_width", "top1_error"]).reset_index(drop=True)
    # One printed name for two models (SoFAR's "BinaryDenseNet51(32)"): add the model's name.
    shared = df.groupby("model_printed")["preset"].transform("nunique") > 1
    df["label"] = [
        f"{printed} = {PRESETS[preset].paper_name}"
        if clash and PRESETS[preset].paper_name != printed
        else printed
        for printed, preset, clash in zip(df["model_printed"], df["preset"], shared, strict=True)
    ]
    # Results a paper quotes from the original authors say so ("published by Liu et al.").
    quoted = df["note"].fillna("").str.extract(r"published by (\w[\w-]* et al\.)")[0]
    df["label"] = df["label"].where(quoted.isna(), df["label"] + " (" + quoted + ")")
    df["cost"] = df[ours]
    df["paper_cost"] = df[paper]
    df["on_front"] = False
    df.loc[pareto_front(df["cost"], df["top1_error"]), "on_front"] = True
    return df


PLOT_KINDS = {"accuracy-vs-flops": "flops", "accuracy-vs-params": "params"}


def plot_kind(
    kind: str,
    dataset: str = "imagenet",
    out: Path | None = None,
    show_paper_costs: bool = False,
    include: Sequence[str] = (),
) -> list[Path]:
    """``sofar-cost plot KIND``: :func:`plot_accuracy` by the command's plot name."""
    if kind not in PLOT_KINDS:
        raise SofarError(f"unknown plot {kind!r}; valid: {', '.join(PLOT_KINDS)}")
    try:
        return plot_accuracy(
            PLOT_KINDS[kind], dataset, out, show_paper_costs=show_paper_costs, include=include
        )
    except OSError as error:
        raise SofarError(f"cannot write the plot: {error}") from None


def plot_accuracy(
    metric: str = "flops",
    dataset: str = "imagenet",
    out: Path | str | None = None,
    show_paper_costs: bool = False,
    source: str | None = "sofar",
    include: Sequence[str] = (),
) -> list[Path]:
    """Save top-1 error vs our Flops (or Mbit) as PNG and SVG; return the written paths.

    ``out`` names the file (suffix .png, .svg or none; both formats are written); by default
    ``accuracy_vs_{metric}_{dataset}.png`` in the current directory. ``include`` adds other
    sources' results (``accuracy_points``).
    """
    out = Path(out or f"accuracy_vs_{metric}_{dataset}.png")
    if out.suffix.lower() not in ("", ".png", ".svg"):
        raise SofarError(f"--out must end in .png or .svg (both are written), got {out.name!r}")
    points = accuracy_points(metric, dataset, source, include)
    # An Agg figure outside pyplot: no global backend switch, nothing left open.
    fig = Figure(figsize=(10, 6.2), layout="constrained")
    FigureCanvasAgg(fig)
    who = "all papers" if source is None else " + ".join(
        SOURCE_NAMES[s] for s in dict.fromkeys([source, *include])
    )
    _draw(fig.subplots(), points, metric, dataset, show_paper_costs, who)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


def _draw(
    ax: Axes,
    points: pd.DataFrame,
    metric: str,
    dataset: str,
    show_paper_costs: bool,
    who: str,
) -> None:
    points = _clip_outliers(ax, points)
    handles = []
    lines = []  # (xs, ys) of every line drawn: labels keep clear of them
    for family, group in points.groupby("family", sort=False):
        name, marker, colour = FAMILY_STYLE[family]
        style = {"marker": marker, "s": 55, "zorder": 3}
        ax.scatter(group["cost"], group["y"], color=colour, ec="black", lw=0.5, **style)
        handles.append(Line2D([], [], ls="", marker=marker, color=colour, mec="black", ms=7))
        handles[-1].set_label(name)
        if show_paper_costs:
            printed = group[group["paper_cost"].notna()]
            ax.scatter(printed["paper_cost"], printed["y"], fc="none", ec=colour, **style)
            for row in printed.itertuples():
                lines.append(([row.cost, row.paper_cost], [row.y] * 2))
                ax.plot(*lines[-1], color=colour, lw=0.7, zorder=2)
    if show_paper_costs:
        handles.append(Line2D([], [], marker="o", color="black", lw=0.7, mfc="none"))
        handles[-1].set_label("paper's printed cost (hollow), ours filled")

    ax.margins(x=0.12)
    front = points[points["on_front"]].sort_values("cost")
    xmax = ax.get_xlim()[1]
    xs, ys = [*front["cost"], xmax], [*front["top1_error"], front["top1_error"].iloc[-1]]
    ax.step(xs, ys, where="post", color="black", lw=1.2, ls="--", zorder=1)
    ax.set_xlim(right=xmax)
    for i in range(len(xs) - 1):  # the step line as horizontal and vertical pieces
        lines += [([xs[i], xs[i + 1]], [ys[i], ys[i]]), ([xs[i + 1]] * 2, [ys[i], ys[i + 1]])]
    handles.append(Line2D([], [], color="black", lw=1.2, ls="--"))
    handles[-1].set_label("Pareto front (lowest error at that cost)")

    _format_axes(ax, metric, dataset, who)
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False
    )
    ax.figure.canvas.draw()  # settle the layout, then freeze it: labels are placed in pixels
    ax.figure.set_layout_engine("none")
    _place_labels(ax, points, lines)


def _clip_outliers(ax: Axes, points: pd.DataFrame) -> pd.DataFrame:
    """Set the y range; errors far above the rest (ablations) sit on the top edge, labelled.

    Clips only where it gains much room: values above Q3 + 3 IQR, when that removes at least
    40% of the range. Adds the plotted height ``y``; relabels clipped points with their error.
    """
    errors = points["top1_error"]
    low, high = errors.min(), errors.max()
    q1, q3 = errors.quantile([0.25, 0.75])
    fence = q3 + 3 * (q3 - q1)
    pad = 0.08 * (high - low)
    if fence - low < 0.6 * (high - low):
        pad = 0.08 * (fence - low)
        high = fence
    ax.set_ylim(low - pad, high + pad)
    off = errors > high
    return points.assign(
        y=errors.where(~off, high + 0.5 * pad),
        label=points["label"].where(
            ~off, points["label"] + errors.map(" ({:.2f}%, off scale)".format)
        ),
    )


def _format_axes(ax: Axes, metric: str, dataset: str, who: str) -> None:
    label = METRICS[metric][2]
    if metric == "flops":
        exponent = math.floor(math.log10(ax.get_xlim()[1]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 10**exponent:g}"))
        label += f"  [x 10^{exponent}]"
    ax.set_xlabel(label + "  (left is cheaper)")
    ax.set_ylabel("Top-1 error (%)  (lower is better)")
    what = "Flops" if metric == "flops" else "Params"
    ax.set_title(
        f"{DATASET_NAMES[dataset]}: published top-1 error vs our {what} "
        f"(binary models, {who} results)",
        fontsize=11,
    )
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def _place_labels(
    ax: Axes, points: pd.DataFrame, lines: list[tuple[list[float], list[float]]]
) -> None:
    """Greedy: each label takes the first offset whose box hits no marker, line or label."""
    renderer = ax.figure.canvas.get_renderer()
    to_px = ax.transData.transform
    taken = [
        Bbox.from_bounds(cx - 5, cy - 5, 10, 10)
        for cx, cy in to_px(points[["cost", "y"]].to_numpy())
    ]
    taken += [Bbox(to_px(np.column_stack(line))).padded(1.5) for line in lines]
    inside = ax.get_window_extent(renderer)
    for row in points.sort_values("y").itertuples():
        best: tuple[int, Annotation, Bbox] | None = None
        for dx, dy in _OFFSETS:
            text = ax.annotate(
                row.label,
                (row.cost, row.y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if abs(dy) > 10 else None,
            )
            # Text's own extent: an annotation's would include its leader line.
            text.update_positions(renderer)
            box = Text.get_window_extent(text, renderer).padded(2)
            outside = not (inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1))
            clashes = sum(box.overlaps(t) for t in taken) + 10 * outside
            if best is None or clashes < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clashes, text, box)
            else:
                text.remove()
            if clashes == 0:
                break
        assert best is not None
        taken.append(best[2])
