"""Predicted latency of a model, per layer and in total, from its traced graph and a calibration.

The packed side is what :func:`sofar_cost.engine.pack_model` builds, run once untimed on
deterministic weights; the torch fp32 side is the same net with binarization off in
channels-last PyTorch, traced on the meta device (:func:`~sofar_cost.latency.ops.engine_ops`).
Neither is timed, so a prediction is the same on every run with the same calibration file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from sofar_cost.latency.calibration import Calibration
from sofar_cost.latency.ops import SIDES, WORD_BITS, Op, engine_ops

if TYPE_CHECKING:
    from sofar_cost.model_source import ModelSource


@dataclass
class LatencyPrediction:
    """Predicted ms of one model on both sides, with per-layer rows."""

    model: str
    dataset: str
    width: int | None
    ms_packed: float
    ms_torch_fp32: float
    word_efficiency: float | None  # over all binary convs, weighted by their packed words
    layers: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"ms_packed_predicted": self.ms_packed,
                "ms_torch_fp32_predicted": self.ms_torch_fp32,
                "word_efficiency": self.word_efficiency}


def _layer_rows(ops_by_side: dict[str, list[Op]], calibration: Calibration) -> list[dict]:
    """Per module path: predicted ms on each side and, for binary convs, the word efficiency."""
    rows: dict[str, dict[str, Any]] = {}
    for side, ops in ops_by_side.items():
        for op in ops:
            row = rows.setdefault(op.layer, {"name": op.layer, "latency_kinds": [],
                                             "ms_packed": 0.0, "ms_torch_fp32": 0.0,
                                             "word_efficiency": None, "words_per_pixel": None})
            row[f"ms_{side}"] += calibration.network_op_ms(op, side)
            if op.kind != "module_call" and op.kind not in row["latency_kinds"]:
                row["latency_kinds"].append(op.kind)
            if op.words_per_pixel:
                row["word_efficiency"] = op.word_efficiency
                row["words_per_pixel"] = op.words_per_pixel
    for row in rows.values():
        row["latency_kinds"] = ", ".join(row["latency_kinds"])
    return list(rows.values())


def word_efficiency(ops: list[Op]) -> float | None:
    """Used sign bits / packed bits over all binary convs, weighted by the words each reads."""
    convs = [op for op in ops if op.kind == "binary_conv"]
    if not convs:
        return None
    words = sum(op.work[0] for op in convs)
    used = sum(op.work[0] * op.in_channels / (WORD_BITS * op.words_per_pixel) for op in convs)
    return used / words


def predict(model: nn.Module, input_shape: tuple[int, ...], calibration: Calibration, *,
            name: str | None = None, dataset: str = "", width: int | None = None,
            sides: tuple[str, ...] = SIDES) -> LatencyPrediction:
    """Predict ``model``'s latency (it may live on the meta device; it is left as it is).

    ``sides`` may leave out "torch_fp32" (its total is then nan) where only the packed
    latency is wanted, as in solving: one trace instead of two.
    """
    ops = {side: engine_ops(model, input_shape, side) for side in sides}
    totals = {side: sum(calibration.network_op_ms(op, side) for op in ops.get(side, []))
              if side in ops else float("nan") for side in SIDES}
    return LatencyPrediction(name or type(model).__name__, dataset, width, totals["packed"],
                             totals["torch_fp32"], word_efficiency(ops.get("packed", [])),
                             _layer_rows(ops, calibration))


def predict_model(model: str | ModelSource, dataset: str, width: int | None,
                  calibration: Calibration, sides: tuple[str, ...] = SIDES) -> LatencyPrediction:
    """:func:`predict` for a preset at its paper width (or ``width``), or for any model spec /
    :class:`~sofar_cost.model_source.ModelSource` (a user model with its own input shape)."""
    from sofar_cost.model_source import ModelSource, load_source

    source = model if isinstance(model, ModelSource) else load_source(model)
    width = source.resolved_width(width, dataset)
    shape = source.input_shape(dataset)
    return source.on_meta_or_cpu(lambda device: predict(
        source.model_on(device, width, dataset), shape, calibration, name=source.name,
        dataset=source.label(dataset), width=width, sides=sides))
