"""Width solver: the largest base width (or growth rate) whose cost stays within a budget.

The papers' rule, checked on all 11 RF widths of SoFAR Tables 1-2: the largest integer width
whose Params (Mbit) stay at or below the baseline's Params. Flops are not what is matched.

Costs are low-degree polynomials in the width (convs are w*w, stem and classifier w), with
small steps where DenseNet transitions round. So the solver fits a quadratic through three
probes, jumps to its root, then walks one step at a time with exact counts until the
boundary is pinned: a handful of model builds instead of hundreds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sofar_cost.costs import WidthCosts
from sofar_cost.errors import SofarError
from sofar_cost.models.registry import MAX_WIDTH

METRICS = {"params": ("params",), "flops": ("flops",), "both": ("params", "flops")}


@dataclass(frozen=True)
class Budget:
    """Upper bounds (inclusive); None means that metric is not constrained."""

    params_mbit: float | None = None
    flops: float | None = None

    def limit(self, metric: str) -> float | None:
        return self.params_mbit if metric == "params" else self.flops


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
    """The largest multiple of ``multiple_of`` whose cost fits the budget on ``on``."""
    if on not in METRICS:
        raise SofarError(f"--on must be one of {', '.join(METRICS)}, got {on!r}")
    if multiple_of < 1 or multiple_of > MAX_WIDTH:
        raise SofarError(f"--multiple-of must be in 1..{MAX_WIDTH}, got {multiple_of}")
    metrics = METRICS[on]
    for metric in metrics:
        limit = budget.limit(metric)
        if limit is None:
            raise SofarError(f"no {metric} budget given for --on {on}")
        if limit <= 0:
            raise SofarError(f"the {metric} budget must be positive, got {limit}")
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
