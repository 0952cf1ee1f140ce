"""Costs of named models and of any width-parameterised builder, built on the meta device.

Building on ``meta`` allocates no weights, so even the 149-layer nets cost a fraction of a
second to build; Params need no forward pass at all, Flops need one traced pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import nn

from sofar_cost.counting import CountOptions
from sofar_cost.errors import SofarError
from sofar_cost.models.layers import DATASETS
from sofar_cost.models.registry import check_dataset, check_width, model_width, resolve
from sofar_cost.results import Comparison
from sofar_cost.tracer import CostReport, parameter_counts, trace

if TYPE_CHECKING:
    from sofar_cost.latency import Calibration, LatencyPrediction

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
        calibration: Calibration | None = None,
    ) -> None:
        self.build = build
        self.calibration = calibration
        self.shape = shape
        self.options = options or CountOptions()
        self.name = name
        self.dataset = dataset
        self.params_mbit = lru_cache(maxsize=None)(self._params_mbit)
        self.report = lru_cache(maxsize=None)(self._report)
        self.latency = lru_cache(maxsize=None)(self._latency)

    @classmethod
    def for_model(
        cls, name: str, dataset: str = "imagenet", options: CountOptions | None = None,
        calibration: Calibration | None = None,
    ) -> WidthCosts:
        spec = resolve(name)
        data = check_dataset(dataset)
        return cls(lambda w: spec.build(w, data), input_shape(dataset), options, spec.name, dataset,
                   calibration)

    def _meta_model(self, width: int) -> nn.Module:
        with torch.device("meta"):
            return self.build(check_width(width))

    def _params_mbit(self, width: int) -> float:
        return self.options.params_mbit(*parameter_counts(self._meta_model(width), self.options))

    def _report(self, width: int) -> CostReport:
        model = self._meta_model(width)
        return trace(
            model, self.shape, self.options, name=self.name, dataset=self.dataset, width=width
        )

    def _latency(self, width: int, sides: tuple[str, ...] = ("packed", "torch_fp32")
                 ) -> LatencyPrediction:
        """Predicted latency at ``width`` (needs the calibration given at construction)."""
        from sofar_cost.latency import predict

        if self.calibration is None:
            raise SofarError("a latency cost needs a calibration (--calibration FILE)")
        return predict(self._meta_model(width), self.shape, self.calibration, name=self.name,
                       dataset=self.dataset, width=width, sides=sides)

    def metric(self, width: int, on: str) -> float:
        if on == "latency":  # the packed side only: one run per probed width
            from sofar_cost.latency.ops import TooLargeToPack

            try:
                return self.latency(width, ("packed",)).ms_packed
            except TooLargeToPack:  # far above any preset (a solver's top probe): no fit
                return math.inf
        return self.params_mbit(width) if on == "params" else self.report(width).flops


@lru_cache(maxsize=256)
def model_cost(
    name: str,
    dataset: str = "imagenet",
    width: int | None = None,
    options: CountOptions | None = None,
) -> CostReport:
    """The cost report of a named model: the one place a model argument becomes costs.

    Built on the meta device (no weights allocated) and traced once; cached, so treat the
    report as read-only.

    Args:
        name: a preset, alias or fractal name (see :func:`sofar_cost.create_model`).
        dataset: ``imagenet`` or ``cifar100``.
        width: base width / growth rate in 1..4096; the paper's width for the dataset if None.
        options: what counts (:class:`~sofar_cost.count_options.CountOptions`); the papers'
            convention if None.

    Returns:
        A :class:`~sofar_cost.tracer.CostReport`: ``params_mbit``, ``flops``, per-layer rows.

    Raises:
        SofarError: unknown model or dataset, a bad width, or no default width.

    Example:
        >>> from sofar_cost import model_cost
        >>> report = model_cost("bireal18", "imagenet")
        >>> round(report.params_mbit, 2), f"{report.flops:.2e}"
        (33.18, '1.64e+08')
    """
    spec = resolve(name)
    check_dataset(dataset)
    width = model_width(spec, dataset, width)
    return WidthCosts.for_model(spec.name, dataset, options).report(width)


def compare(
    models: Sequence[str],
    dataset: str = "imagenet",
    width: int | None = None,
    options: CountOptions | None = None,
    per_layer: bool = False,
    calibration: Calibration | None = None,
) -> Comparison:
    """``sofar-cost compare``: the models' costs, each beside the last-named (the baseline);
    with a ``calibration``, also their predicted latency (packed and torch fp32)."""
    if not models:
        raise SofarError("name at least one model; the last one is the baseline")
    check_dataset(dataset)
    if width is not None:
        check_width(width)
    reports = [model_cost(name, dataset, width, options) for name in models]
    latency = None
    if calibration is not None:
        from sofar_cost.latency import predict_model

        latency = [predict_model(name, dataset, width, calibration) for name in models]
    return Comparison(reports, dataset, per_layer, latency)
