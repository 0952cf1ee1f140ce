"""Accuracy-vs-cost figures: published top-1 errors placed at *our* computed Params or Flops.

The papers' printed costs are not all reproducible (docs/counting.md), so the x axis is our
count; ``show_paper_costs`` draws the printed cost as a hollow marker joined to ours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed in CI or notebooks

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
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
}
# Label offsets (points) tried in order: right, left, above, below, then the diagonals.
_OFFSETS = [
    (6, 0),
    (-6, 0),
    (0, 7),
    (0, -7),
    (6, 6),
    (6, -6),
    (-6, 6),
    (-6, -6),
    (8, 13),
    (8, -13),
    (-8, 13),
    (-8, -13),
]


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
    metric: str = "flops", dataset: str = "imagenet", source: str | None = "sofar"
) -> pd.DataFrame:
    """The points ``plot_accuracy`` draws: binary rows with a preset, one per distinct result.

    Columns: everything of ``published_with_costs`` plus ``label``, ``cost`` (our count),
    ``paper_cost`` (printed, NaN where not printed) and ``on_front`` (Pareto-optimal).
    A result repeated in several tables (same preset, width and error) appears once, as its
    first table gives it.
    """
    _check_choice("metric", metric, list(METRICS))
    _check_choice("dataset", dataset, list(DATASETS))
    if source is not None:
        _check_choice("source", source, SOURCES)
    ours, paper, _ = METRICS[metric]
    df = published_with_costs(source, dataset, binary_only=True, drop_unmatched=True)
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
    df["cost"] = df[ours]
    df["paper_cost"] = df[paper]
    df["on_front"] = False
    df.loc[pareto_front(df["cost"], df["top1_error"]), "on_front"] = True
    return df


def plot_accuracy(
    metric: str = "flops",
    dataset: str = "imagenet",
    out: Path | str | None = None,
    show_paper_costs: bool = False,
    source: str | None = "sofar",
) -> list[Path]:
    """Save top-1 error vs our Flops (or Mbit) as PNG and SVG; return the written paths.

    ``out`` names the file (suffix .png, .svg or none; both formats are written); by default
    ``accuracy_vs_{metric}_{dataset}.png`` in the current directory.
    """
    points = accuracy_points(metric, dataset, source)
    out = Path(out or f"accuracy_vs_{metric}_{dataset}.png")
    if out.suffix.lower() not in ("", ".png", ".svg"):
        raise SofarError(f"--out must end in .png or .svg (both are written), got {out.name!r}")
    fig, ax = plt.subplots(figsize=(10, 6.2), layout="constrained")
    try:
        _draw(ax, points, metric, dataset, show_paper_costs, source)
        out.parent.mkdir(parents=True, exist_ok=True)
        paths = [out.with_suffix(".png"), out.with_suffix(".svg")]
        fig.savefig(paths[0], dpi=150)
        fig.savefig(paths[1])
    finally:
        plt.close(fig)
    return paths


def _draw(
    ax: Axes,
    points: pd.DataFrame,
    metric: str,
    dataset: str,
    show_paper_costs: bool,
    source: str | None,
) -> None:
    handles = []
    for family, group in points.groupby("family", sort=False):
        name, marker, colour = FAMILY_STYLE[family]
        ax.scatter(
            group["cost"],
            group["top1_error"],
            marker=marker,
            color=colour,
            s=55,
            zorder=3,
            edgecolors="black",
            linewidths=0.5,
        )
        handles.append(
            Line2D(
                [], [], ls="", marker=marker, color=colour, mec="black", mew=0.5, ms=7, label=name
            )
        )
        if show_paper_costs:
            printed = group[group["paper_cost"].notna()]
            for row in printed.itertuples():
                ax.plot(
                    [row.cost, row.paper_cost], [row.top1_error] * 2, color=colour, lw=0.7, zorder=2
                )
            ax.scatter(
                printed["paper_cost"],
                printed["top1_error"],
                marker=marker,
                s=55,
                facecolors="none",
                edgecolors=colour,
                linewidths=1.0,
                zorder=3,
            )
    if show_paper_costs:
        handles.append(
            Line2D(
                [],
                [],
                ls="-",
                lw=0.7,
                marker="o",
                color="black",
                mfc="none",
                label="paper's printed cost (hollow)",
            )
        )

    front = points[points["on_front"]].sort_values("cost")
    ax.margins(x=0.12, y=0.1)
    xmax = ax.get_xlim()[1]
    ax.step(
        [*front["cost"], xmax],
        [*front["top1_error"], front["top1_error"].iloc[-1]],
        where="post",
        color="black",
        lw=1.2,
        ls="--",
        zorder=1,
    )
    ax.set_xlim(right=xmax)
    handles.append(
        Line2D(
            [], [], color="black", lw=1.2, ls="--", label="Pareto front (lowest error at that cost)"
        )
    )

    _format_axes(ax, metric, dataset, source)
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )
    _place_labels(
        ax, points["cost"].to_numpy(), points["top1_error"].to_numpy(), points["label"].tolist()
    )


def _format_axes(ax: Axes, metric: str, dataset: str, source: str | None) -> None:
    label = METRICS[metric][2]
    if metric == "flops":
        exponent = math.floor(math.log10(ax.get_xlim()[1]))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 10**exponent:g}"))
        label += f"  [x 10^{exponent}]"
    ax.set_xlabel(label + "  (left is cheaper)")
    ax.set_ylabel("Top-1 error (%)  (lower is better)")
    who = (
        "all papers"
        if source is None
        else {"sofar": "SoFAR", "igp": "IGP", "binarydensenet": "BinaryDenseNet"}[source]
    )
    what = "Flops" if metric == "flops" else "Params"
    ax.set_title(
        f"{DATASET_NAMES[dataset]}: published top-1 error vs our {what} "
        f"(binary models, {who} results)",
        fontsize=11,
    )
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def _place_labels(ax: Axes, xs: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    """Greedy: each label takes the first offset whose box hits no marker or earlier label."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    taken = [Bbox.from_bounds(cx - 5, cy - 5, 10, 10) for cx, cy in centres]
    inside = ax.get_window_extent(renderer)
    for (x, y), label in sorted(
        zip(zip(xs, ys, strict=True), labels, strict=True), key=lambda p: p[0][1]
    ):
        best = None
        for dx, dy in _OFFSETS:
            far = abs(dy) > 10
            text = ax.annotate(
                label,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=7,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if far else None,
            )
            box = text.get_window_extent(renderer).padded(1)
            clashes = sum(box.overlaps(t) for t in taken) + (
                not inside.contains(box.x0, box.y0) or not inside.contains(box.x1, box.y1)
            )
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
