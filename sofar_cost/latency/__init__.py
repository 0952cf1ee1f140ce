"""Predicted latency as a cost: calibrate per-kind op costs on this machine, predict models.

:func:`calibrate` measures; :func:`load_calibration` reads and checks a calibration;
:func:`predict_model` / :func:`predict` give per-layer and whole-model latency of the packed
engine and of torch fp32. See docs/latency.md.
"""

from sofar_cost.latency.calibration import (
    Calibration,
    calibrate,
    config_calibration,
    default_path,
    load_calibration,
    machine_key,
    read_calibration,
)
from sofar_cost.latency.model import LatencyPrediction, predict, predict_model

__all__ = [
    "Calibration",
    "LatencyPrediction",
    "calibrate",
    "config_calibration",
    "default_path",
    "load_calibration",
    "machine_key",
    "predict",
    "predict_model",
    "read_calibration",
]
