"""Costs of any model source (preset or user callable) as a function of its width, cached.

Building on ``meta`` allocates no weights, so even the 149-layer nets cost a fraction of a
second to build; Params need no forward pass at all, Flops need one traced pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from torch import nn

from sofar_cost.counting import CountOptions
from sofar_cost.errors import SofarError
from sofar_cost.model_source import (
    CallableSource,
    ModelSource,
    input_shape,
    load_source,
    uncounted_warnings,
)
from sofar_cost.models.registry import check_dataset, check_width
from sofar_cost.results import Comparison
from sofar_cost.tracer import CostReport

__all__ = ["Builder", "WidthCosts", "compare", "input_shape", "model_cost"]

if TYPE_CHECKING:
    from sofar_cost.latency import Calibration, LatencyPrediction

Builder = Callable[[int], nn.Module]


class WidthCosts:
    """Cached costs of one model source as a function of its width (or growth rate).

    ``WidthCosts(lambda w: MyNet(w), (1, 3, 32, 32))`` wraps a width -> model function;
    ``WidthCosts(source, dataset=...)`` any :class:`ModelSource` (a preset, a user callable).
    """

    def __init__(
        self,
        build: Builder | ModelSource,
        shape: tuple[int, ...] | None = None,
        options: CountOptions | None = None,
        name: str = "model",
        dataset: str = "imagenet",
        calibration: Calibration | None = None,
    ) -> None:
        self.calibration = calibration
        if isinstance(build, ModelSource):
            self.source = build
        else:
            if shape is None:
                raise TypeError("WidthCosts(build, shape): a builder needs the input shape")
            self.source = CallableSource.from_builder(build, shape, name)
        self.options = options or CountOptions()
        self.name = self.source.name
        self.dataset = dataset
        self.shape = self.source.input_shape(dataset)
        self.params_mbit = lru_cache(maxsize=None)(self._params_mbit)
        self.report = lru_cache(maxsize=None)(self._report)
        self.latency = lru_cache(maxsize=None)(self._latency)

    @classmethod
    def for_model(
        cls, name: str, dataset: str = "imagenet", options: CountOptions | None = None,
        calibration: Calibration | None = None,
    ) -> WidthCosts:
        return cls(load_source(name), options=options, dataset=dataset, calibration=calibration)

    def build(self, width: int) -> nn.Module:
        """The model at ``width`` on torch's current default device."""
        return self.source.build(check_width(width), self.dataset)

    def _params_mbit(self, width: int) -> float:
        counts = self.source.parameter_counts(self.dataset, check_width(width), self.options)
        return self.options.params_mbit(*counts)

    def _report(self, width: int) -> CostReport:
        return self.source.report(self.dataset, check_width(width), self.options)

    def _latency(self, width: int, sides: tuple[str, ...] = ("packed", "torch_fp32")
                 ) -> LatencyPrediction:
        """Predicted latency at ``width`` (needs the calibration given at construction)."""
        from sofar_cost.latency import predict_model

        if self.calibration is None:
            raise SofarError("a latency cost needs a calibration (--calibration FILE)")
        return predict_model(self.source, self.dataset, width, self.calibration, sides)

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
    name: str | ModelSource,
    dataset: str = "imagenet",
    width: int | None = None,
    options: CountOptions | None = None,
) -> CostReport:
    """The cost report of a model: the one place a model argument becomes costs.

    Built on the meta device (no weights allocated; a user model that cannot run there is
    traced on the CPU) and traced once; cached, so treat the report as read-only.

    Args:
        name: a preset, alias or fractal name (see :func:`sofar_cost.create_model`), or any
            :class:`~sofar_cost.model_source.ModelSource` (``load_source("net.py:make",
            kwargs, shape)``: a user model, see docs/model-specs.md).
        dataset: ``imagenet`` or ``cifar100``.
        width: base width / growth rate in 1..4096; the paper's width for the dataset if None.
        options: what counts (:class:`~sofar_cost.count_options.CountOptions`); the papers'
            convention if None.

    Returns:
        A :class:`~sofar_cost.tracer.CostReport`: ``params_mbit``, ``flops``, per-layer rows.

    Raises:
        SofarError: unknown model or dataset, a bad width, or no default width; for a user
            model, a callable that raises or a forward that rejects the input shape.

    Example:
        >>> from sofar_cost import model_cost
        >>> report = model_cost("bireal18", "imagenet")
        >>> report.model, report.width, report.binary_params > 0
        ('bireal18', 64, True)
    """
    source = name if isinstance(name, ModelSource) else load_source(name)
    check_dataset(dataset)
    return source.report(dataset, width, options)


def compare(
    models: Sequence[str | ModelSource],
    dataset: str = "imagenet",
    width: int | None = None,
    options: CountOptions | None = None,
    per_layer: bool = False,
    depth: int | None = None,
    strict: bool = False,
    calibration: Calibration | None = None,
) -> Comparison:
    """``sofar-cost compare``: the models' costs, each beside the last-named (the baseline);
    per-layer rows summed to module ``depth`` when given. ``strict``: uncounted ops that can
    multiply raise SofarError instead of becoming warnings. With a ``calibration``, also their
    predicted latency (packed and torch fp32)."""
    if not models:
        raise SofarError("name at least one model; the last one is the baseline")
    check_dataset(dataset)
    if width is not None:
        check_width(width)
    reports = [model_cost(model, dataset, width, options) for model in models]
    warnings = uncounted_warnings(reports, strict)
    if depth is not None:
        reports = [report.rolled_up(depth) for report in reports]
    latency = None
    if calibration is not None:
        from sofar_cost.latency import predict_model

        latency = [predict_model(model, dataset, width, calibration) for model in models]
    label = dataset if all(r.dataset == dataset for r in reports) else reports[-1].dataset
    return Comparison(reports, label, per_layer or depth is not None, latency, warnings)
