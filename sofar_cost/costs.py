"""Costs of named models and of any width-parameterised builder, built on the meta device.

Building on ``meta`` allocates no weights, so even the 149-layer nets cost a fraction of a
second to build; Params need no forward pass at all, Flops need one traced pass.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from sofar_cost.counting import CountOptions
from sofar_cost.models.layers import DATASETS
from sofar_cost.models.registry import check_dataset, check_width, resolve
from sofar_cost.tracer import CostReport, parameter_counts, trace

Builder = Callable[[int], nn.Module]


def input_shape(dataset: str, batch: int = 1) -> tuple[int, int, int, int]:
    size = DATASETS[dataset].image_size
    return (batch, 3, size, size)


class WidthCosts:
    """Cached costs of one model family as a function of its width (or growth rate)."""

    def __init__(
        self,
        build: Builder,
        shape: tuple[int, ...],
        options: CountOptions | None = None,
        name: str = "model",
        dataset: str = "",
    ) -> None:
        self.build = build
        self.shape = shape
        self.options = options or CountOptions()
        self.name = name
        self.dataset = dataset
        self.params_mbit = lru_cache(maxsize=None)(self._params_mbit)
        self.report = lru_cache(maxsize=None)(self._report)

    @classmethod
    def for_model(
        cls, name: str, dataset: str = "imagenet", options: CountOptions | None = None
    ) -> WidthCosts:
        spec = resolve(name)
        data = check_dataset(dataset)
        return cls(lambda w: spec.build(w, data), input_shape(dataset), options, spec.name, dataset)

    def _meta_model(self, width: int) -> nn.Module:
        with torch.device("meta"):
            return self.build(check_width(width))

    def _params_mbit(self, width: int) -> float:
        fp, binary = parameter_counts(self._meta_model(width), self.options)
        return (fp * self.options.fp_bits + binary * self.options.binary_bits) / 1e6

    def _report(self, width: int) -> CostReport:
        model = self._meta_model(width)
        return trace(
            model, self.shape, self.options, name=self.name, dataset=self.dataset, width=width
        )

    def metric(self, width: int, on: str) -> float:
        return self.params_mbit(width) if on == "params" else self.report(width).flops


@lru_cache(maxsize=256)
def model_cost(
    name: str,
    dataset: str = "imagenet",
    width: int | None = None,
    options: CountOptions | None = None,
) -> CostReport:
    """The cost report of a preset at the paper's width (or ``width``); cached, so treat it
    as read-only."""
    spec = resolve(name)
    check_dataset(dataset)
    width = check_width(spec.default_width(dataset) if width is None else width)
    return WidthCosts.for_model(spec.name, dataset, options).report(width)
