"""Shared fixtures: cost reports are cached per (model, dataset, width) across tests."""

from __future__ import annotations

from functools import cache

from sofar_cost.costs import model_cost
from sofar_cost.tracer import CostReport


@cache
def cost(name: str, dataset: str = "imagenet", width: int | None = None) -> CostReport:
    return model_cost(name, dataset, width)
