"""Width solver: the largest base width (or growth rate) whose cost stays within a budget.

The papers' rule, checked on all 11 RF widths of SoFAR Tables 1-2: the largest integer width
whose Params (Mbit) stay at or below the baseline's Params. Flops are not what is matched.

Costs are low-degree polynomials in the width (convs are w*w, stem and classifier w), with
small steps where DenseNet transitions round. So the solver fits a quadratic through three
probes, jumps to its root, then walks one step at a time with exact counts until the
boundary is pinned: a handful of model builds instead of hundreds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sofar_cost.costs import WidthCosts, model_cost
from sofar_cost.count_options import METRICS
from sofar_cost.errors import SofarError
from sofar_cost.model_source import ModelSource, PresetSource, load_source, uncounted_warnings
from sofar_cost.models.architectures import MAX_FRACTAL_COLUMNS
from sofar_cost.models.registry import (
    MAX_WIDTH,
    ModelSpec,
    check_dataset,
    column_variant,
)
from sofar_cost.results import FamilySolve, WidthSolve
from sofar_cost.tracer import CostReport

if TYPE_CHECKING:
    from sofar_cost.latency import Calibration


@dataclass(frozen=True)
class Budget:
    """Upper bounds (inclusive); None means that metric is not constrained."""

    params_mbit: float | None = None
    flops: float | None = None
    latency_ms: float | None = None  # predicted packed latency (a calibration's)

    def limit(self, metric: str) -> float | None:
        return {"params": self.params_mbit, "flops": self.flops,
                "latency": self.latency_ms}[metric]


@dataclass
class Solution:
    width: int
    on: str
    budget: Budget


def _fits(costs: WidthCosts, width: int, metrics: tuple[str, ...], budget: Budget) -> bool:
    return all(costs.metric(width, m) <= budget.limit(m) for m in metrics)


def _quadratic_guess(costs: WidthCosts, metric: str, limit: float, step: int) -> int:
    """Root of the quadratic through three probes, rounded down to a multiple of ``step``."""
    xs = np.array([4, 16, 64]) * step
    xs = xs[xs <= MAX_WIDTH]
    if len(xs) < 3:
        return step
    ys = np.array([costs.metric(int(x), metric) for x in xs])
    a, b, c = np.polyfit(xs.astype(float), ys, 2)
    roots = [r.real for r in np.roots([a, b, c - limit]) if abs(r.imag) < 1e-9 and r.real > 0]
    guess = int(max(roots)) if roots else step
    return max(step, min(MAX_WIDTH // step * step, guess // step * step))


def solve_width(
    costs: WidthCosts, budget: Budget, on: str = "params", multiple_of: int = 1
) -> Solution:
    """The largest multiple of ``multiple_of`` whose cost fits the budget on ``on``.

    Args:
        costs: the family's costs as a function of width, e.g.
            ``WidthCosts.for_model("rf-c4d8", "imagenet")``.
        budget: inclusive upper bounds; the metrics named by ``on`` must be given.
        on: ``params``, ``flops`` or ``both``.
        multiple_of: the width's step (e.g. 64 for hardware-friendly channel counts).

    Returns:
        A :class:`Solution` whose ``width`` is the largest fitting width.

    Raises:
        SofarError: an unknown ``on``, a missing, non-positive or non-finite limit, a step
            outside 1..4096, or a budget no width in 1..4096 meets.

    Example:
        >>> from sofar_cost import model_cost, solve_width
        >>> from sofar_cost.costs import WidthCosts
        >>> from sofar_cost.solver import Budget
        >>> limit = model_cost("bireal18").params_mbit
        >>> solve_width(WidthCosts.for_model("rf-c4d8"), Budget(limit)).width
        41
    """
    if on not in METRICS:
        raise SofarError(f"--on must be one of {', '.join(METRICS)}, got {on!r}")
    if multiple_of < 1 or multiple_of > MAX_WIDTH:
        raise SofarError(f"--multiple-of must be in 1..{MAX_WIDTH}, got {multiple_of}")
    metrics = METRICS[on]
    for metric in metrics:
        limit = budget.limit(metric)
        if limit is None:
            raise SofarError(f"no {metric} budget given for --on {on}")
        if not math.isfinite(limit) or limit <= 0:
            raise SofarError(f"the {metric} budget must be a positive finite number, got {limit}")
    step = multiple_of
    if not _fits(costs, step, metrics, budget):
        smallest = {m: costs.metric(step, m) for m in metrics}
        raise SofarError(
            f"no width fits the budget: the smallest model (width {step}) costs "
            + ", ".join(f"{m} {v:.6g}" for m, v in smallest.items())
        )
    top = MAX_WIDTH // step * step
    if _fits(costs, top, metrics, budget):
        raise SofarError(f"the budget is reachable only above the width limit {MAX_WIDTH}")
    width = min(_quadratic_guess(costs, m, budget.limit(m), step) for m in metrics)
    while width > step and not _fits(costs, width, metrics, budget):
        width -= step
    while width + step <= top and _fits(costs, width + step, metrics, budget):
        width += step
    return Solution(width, on, budget)


def budget_for(
    match: str | ModelSource | None, dataset: str, mbit: float | None = None,
    flops: float | None = None, ms: float | None = None, calibration: Calibration | None = None,
) -> tuple[Budget, CostReport | None]:  # fmt: skip
    """The budget of a baseline model (``--match``) or of absolute limits, not both; with the
    baseline's report when there is one. With a ``calibration``, the baseline's budget includes
    its predicted packed latency."""
    if match is None and mbit is None and flops is None and ms is None:
        raise SofarError("give a baseline with --match MODEL or a budget with "
                         "--budget-mbit/--budget-flops/--budget-ms")
    if match is not None and (mbit is not None or flops is not None or ms is not None):
        raise SofarError("use either --match or --budget-mbit/--budget-flops/--budget-ms, "
                         "not both")
    if match is None:
        return Budget(mbit, flops, ms), None
    report = model_cost(match, dataset)
    latency = None
    if calibration is not None:
        from sofar_cost.latency import predict_model

        latency = predict_model(match, dataset, None, calibration, ("packed",)).ms_packed
    return Budget(report.params_mbit, report.flops, latency), report


def parse_columns(text: str, family: str) -> list[int]:
    """'1..6', '3' or '1,2,4' -> column counts, within the family's limit."""
    if family not in MAX_FRACTAL_COLUMNS:
        raise SofarError(f"--columns needs a fractal model (rf-, f-, drf-, df-), not {family!r}")
    limit = MAX_FRACTAL_COLUMNS[family]
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split(".."))
            values = list(range(low, high + 1))
        else:
            values = [int(part) for part in text.split(",")]
    except ValueError:
        raise SofarError(f"--columns must look like '1..{limit}' or '2,3', got {text!r}") from None
    if not values or any(not 1 <= v <= limit for v in values):
        raise SofarError(f"--columns for {family}- must lie in 1..{limit}, got {text!r}")
    return values


def solve_spec(
    spec: ModelSpec | ModelSource,
    budget: Budget,
    dataset: str,
    on: str = "params",
    multiple_of: int = 1,
    baseline: CostReport | None = None,
    calibration: Calibration | None = None,
    strict: bool = False,
) -> WidthSolve:
    """One solve with its neighbouring widths and, where comparable, the paper's width. A
    user model (:class:`ModelSource`) has its width keyword varied."""
    source = spec if isinstance(spec, ModelSource) else PresetSource(spec)
    preset = source.preset if isinstance(source, PresetSource) else None
    costs = WidthCosts(source, dataset=dataset, calibration=calibration)
    w = solve_width(costs, budget, on, multiple_of).width
    latency = on == "latency"
    candidates = [
        {"label": f"width {v}" + ("  <- solved" if v == w else ""), **costs.report(v).summary(),
         **({"ms_packed_predicted": costs.metric(v, "latency")} if latency else {})}
        for v in (w - multiple_of, w, w + multiple_of)
        if v >= 1
    ]
    solved = costs.report(w)
    name = baseline.model if baseline else None
    # The paper's width is comparable only for the paper's own pairing and rule.
    paired = preset is not None and name == preset.baseline and on == "params"
    paper_width = preset.widths.get(dataset) if preset and paired else None
    note = ""
    if paper_width is not None and paper_width != w:
        note = "the paper's costs for this model are not reproduced (docs/counting.md)"
    return WidthSolve(
        source.name, name, solved.dataset, on, multiple_of, preset.columns if preset else None,
        w, solved.params_mbit, solved.flops, budget.params_mbit, budget.flops,
        solved.params_mbit / budget.params_mbit if budget.params_mbit else None,
        solved.flops / budget.flops if budget.flops else None,
        paper_width, note, candidates, baseline.summary() if baseline else None,
        costs.metric(w, "latency") if latency else None, budget.latency_ms if latency else None,
        str(calibration.path) if latency and calibration else None,
        uncounted_warnings([solved, baseline], strict),
    )  # fmt: skip


def solve(
    model: str | ModelSource,
    *,
    match: str | ModelSource | None = None,
    dataset: str = "imagenet",
    on: str = "params",
    budget_mbit: float | None = None,
    budget_flops: float | None = None,
    multiple_of: int = 1,
    columns: str | None = None,
    budget_ms: float | None = None,
    calibration: Calibration | None = None,
    strict: bool = False,
) -> WidthSolve | FamilySolve:
    """``sofar-cost solve``: a model's (or, with ``columns``, a family's) widths within a
    baseline's or an absolute budget. ``model``/``match`` are any model spec or
    :class:`ModelSource`; ``strict``: uncounted ops that can multiply raise SofarError.
    ``on="latency"`` solves on predicted packed latency and needs a ``calibration``
    (:func:`sofar_cost.latency.load_calibration`)."""
    check_dataset(dataset)
    source = model if isinstance(model, ModelSource) else load_source(model)
    if on == "latency" and calibration is None:
        raise SofarError("--on latency needs a calibration (--calibration FILE)")
    calibration = calibration if on == "latency" else None
    budget, baseline = budget_for(match, dataset, budget_mbit, budget_flops, budget_ms,
                                  calibration)
    if columns is None:
        return solve_spec(source, budget, dataset, on, multiple_of, baseline, calibration, strict)
    if not isinstance(source, PresetSource):
        raise SofarError(f"--columns needs a fractal preset (rf-, f-, drf-, df-), not {model!r}")
    spec = source.preset
    specs = [column_variant(spec, c) for c in parse_columns(columns, spec.family)]
    return FamilySolve([solve_spec(s, budget, dataset, on, multiple_of, baseline, calibration,
                                   strict) for s in specs])  # fmt: skip
