"""Latency model: op mapping, fit, calibration files (synthetic: no timing), prediction, solve."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d, BinaryLinear
from sofar_cost.costs import WidthCosts
from sofar_cost.errors import SofarError
from sofar_cost.latency import (
    Calibration,
    load_calibration,
    machine_key,
    predict,
    predict_model,
    read_calibration,
)
from sofar_cost.latency.calibration import (
    FIT_ORDER,
    fit,
    fit_network,
    network_samples,
    nonnegative_lstsq,
    sample_ops,
    samples,
)
from sofar_cost.latency.ops import FEATURES, engine_ops
from sofar_cost.models.layers import BinaryConvUnit
from sofar_cost.models.registry import create_model
from sofar_cost.solver import Budget, solve_width


def synthetic(seed: int = 0) -> dict[str, dict[str, float]]:
    """Made-up, distinct coefficients for every kind (ms per call and per unit of work);
    each kind draws from its own seed, so adding a kind leaves the others' values alone."""
    coefficients = {}
    for kind, features in FEATURES.items():
        rng = np.random.default_rng([seed, zlib.crc32(kind.encode())])
        coefficients[kind] = {"per_call": float(rng.uniform(1e-3, 1e-2)),
                              **{f: float(rng.uniform(1e-8, 1e-6)) for f in features}}
    return coefficients


def write(path: Path, key: dict | None = None, **changes) -> Path:
    data = Calibration(key or machine_key(1), synthetic()).to_json()
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Calibration:
    return load_calibration(write(tmp_path_factory.mktemp("cal") / "c.json"))


def meta_model(name: str, width: int | None = None):
    with torch.device("meta"):
        return create_model(name, "imagenet", width)


def kinds(ops) -> dict[str, int]:
    found: dict[str, int] = {}
    for op in ops:
        found[op.kind] = found.get(op.kind, 0) + 1
    return found


@pytest.mark.slow
def test_packed_bireal18_is_read_off_the_engine():
    packed = kinds(engine_ops(meta_model("bireal18"), (1, 3, 224, 224), "packed"))
    fp32 = kinds(engine_ops(meta_model("bireal18"), (1, 3, 224, 224), "torch_fp32"))
    # BN and the shortcut add fused into the 16 packed convs; stem BN folded into the conv,
    # its ReLU + max-pool one pass; shortcuts: 2x2 average pool, then 1x1 conv as a product
    assert packed["binary_conv"] == 16 and "conv3x3" not in packed and "add" not in packed
    assert "batchnorm" not in packed and packed["relu_maxpool"] == 1
    assert packed["avgpool2"] == packed["pointwise_matmul"] == 3 and "conv1x1" not in packed
    assert packed["classifier_head"] == 1 and "linear" not in packed and "mean" not in packed
    assert fp32["conv3x3"] == 16 and fp32["add"] == 16 and fp32["batchnorm"] == 20
    assert "binary_conv" not in fp32


@pytest.mark.slow
def test_densenet_runs_write_one_buffer_and_transitions_fuse():
    packed = kinds(engine_ops(meta_model("binarydensenet28"), (1, 3, 224, 224), "packed"))
    assert "concat" not in packed and packed["bn_maxpool_relu"] == 3
    assert packed["pointwise_matmul"] == 3


def test_word_efficiency_sees_odd_widths_in_a_unit_chain():
    with torch.device("meta"):
        model = tiny_net(41)
    convs = [op for op in engine_ops(model, (1, 3, 8, 8), "packed") if op.kind == "binary_conv"]
    assert [op.word_efficiency for op in convs] == [41 / 64, 41 / 64]


@pytest.mark.slow
def test_word_efficiency_sees_odd_widths():
    ops = engine_ops(meta_model("rf-c4d8-37", 41), (1, 3, 224, 224), "packed")
    convs = [op for op in ops if op.kind == "binary_conv"]
    assert {op.word_efficiency for op in convs} == {41 / 64, 82 / 128, 164 / 192, 328 / 384}
    wide = engine_ops(meta_model("rf-c4d8-37", 64), (1, 3, 224, 224), "packed")
    assert {op.word_efficiency for op in wide if op.kind == "binary_conv"} == {1.0}


@pytest.mark.parametrize(
    ("layer", "kind"),
    [
        (BinaryConv2d(4, 4, 3, padding=1, groups=2), "conv_grouped"),
        (BinaryConv2d(4, 4, 3, padding=2, dilation=2), "conv3x3"),
        (BinaryConv2d(4, 4, 3, padding=1, binary_input=False), "conv3x3"),
        (nn.Sequential(nn.Flatten(), BinaryLinear(4 * 6 * 6, 4)), "binary_conv"),
    ],
)
def test_every_binary_layer_the_engine_runs_is_predicted(calibration, layer, kind):
    """Dilated, grouped and real-input binary convs run in torch (TorchBinaryLayer); a binary
    Linear runs packed."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(3, 4, 1), layer)
    assert kind in kinds(engine_ops(model, (1, 3, 6, 6), "packed"))
    assert predict(model, (1, 3, 6, 6), calibration).ms_packed > 0


@pytest.mark.slow
def test_prediction_sums_its_layers_and_is_deterministic(calibration):
    first = predict_model("bireal18", "imagenet", None, calibration)
    again = predict_model("bireal18", "imagenet", None, calibration)
    assert first.ms_packed == again.ms_packed > 0
    assert first.ms_packed == pytest.approx(sum(r["ms_packed"] for r in first.layers))
    assert first.ms_torch_fp32 == pytest.approx(sum(r["ms_torch_fp32"] for r in first.layers))
    assert first.word_efficiency == 1.0  # 64..512 channels fill their words
    assert predict_model("bireal34", "imagenet", None, calibration).ms_packed > first.ms_packed


NETWORK = {"packed_scale": 1.3, "packed_per_op": 2e-3, "torch_fp32_scale": 1.1,
           "torch_fp32_per_op": 1e-3}


def fitted_rows(grid):
    """Rows timed by made-up coefficients, fitted (the per-kind grid; networks: below)."""
    grid = [s for s in grid if s.kind != "network"]
    truth = Calibration({}, synthetic(1))
    rows = [{"label": s.label, "kind": s.kind, "ms": sum(truth.op_ms(op) for op in sample_ops(s))}
            for s in grid]
    assert set(fit(grid, rows)) == set(FIT_ORDER) == set(FEATURES)
    return rows


def test_fit_recovers_known_coefficients_one_sample_per_kind():
    first = {}
    for s in samples():
        first.setdefault(s.kind, s)
    for r in fitted_rows(list(first.values())):
        assert r["predicted_ms"] == pytest.approx(r["ms"], rel=1e-6)


def test_network_fit_recovers_scale_and_cost_per_op():
    """Whole networks cost ``scale * sum(op alone) + per_op * ops`` per side."""
    truth = Calibration({}, {**synthetic(1), "network": NETWORK})
    nets = [s for s in network_samples() if s.label.split()[1] in ("bireal18", "quicknet-small")]
    ops_of = {s.label: sample_ops(s) for s in nets}
    side_of = {s.label: s.side for s in nets}
    rows = [{"label": s.label, "kind": s.kind,
             "ms": sum(truth.network_op_ms(op, s.side) for op in ops_of[s.label])} for s in nets]
    known = Calibration({}, synthetic(1))
    assert fit_network(known, rows, ops_of, side_of) == pytest.approx(NETWORK, rel=1e-6)


@pytest.mark.slow
def test_fit_recovers_known_coefficients():
    for r in fitted_rows(samples()):
        assert r["predicted_ms"] == pytest.approx(r["ms"], rel=1e-6)


def test_nonnegative_lstsq_drops_a_negative_coefficient():
    a = np.array([[1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    x = nonnegative_lstsq(a, np.array([3.0, 2.0, 1.0]))  # unconstrained slope would be -1
    assert (x >= 0).all() and x[1] == 0


def test_mismatched_calibration_is_refused_unless_forced(tmp_path):
    other = {**machine_key(1), "cpu": "Some Other CPU (family 6, model 85, stepping 4)"}
    path = write(tmp_path / "other.json", other)
    with pytest.raises(SofarError, match="another setup: cpu 'Some Other CPU"):
        load_calibration(path)
    assert load_calibration(path, allow_mismatch=True).key["cpu"].startswith("Some Other")
    with pytest.raises(SofarError, match="threads 1 \\(here: 2\\)"):
        load_calibration(write(tmp_path / "t1.json"), threads=2)
    variant = {**machine_key(1), "kernel_variant": "scalar-popcnt"}
    if variant["kernel_variant"] != machine_key(1)["kernel_variant"]:
        with pytest.raises(SofarError, match="kernel_variant"):
            load_calibration(write(tmp_path / "v.json", variant))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "invalid JSON"),
        ('{"format": "something-else"}', "not a calibration file"),
        ("[1, 2]", "not a calibration file"),
    ],
)
def test_malformed_calibration_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SofarError, match=message):
        read_calibration(path)


def test_missing_or_negative_coefficients_are_refused(tmp_path):
    coefficients = synthetic()
    del coefficients["binary_conv"]["conv_words"]
    with pytest.raises(SofarError, match="'binary_conv' must give non-negative numbers"):
        read_calibration(write(tmp_path / "a.json", coefficients=coefficients))
    coefficients = synthetic()
    coefficients["relu"]["per_call"] = -1.0
    with pytest.raises(SofarError, match="'relu'"):
        read_calibration(write(tmp_path / "b.json", coefficients=coefficients))
    with pytest.raises(SofarError, match="format version"):
        read_calibration(write(tmp_path / "c.json", format_version=99))
    coefficients = {**synthetic(), "network": {**NETWORK, "packed_scale": float("nan")}}
    with pytest.raises(SofarError, match="'network' coefficients must be non-negative"):
        read_calibration(write(tmp_path / "d.json", coefficients=coefficients))
    with pytest.raises(SofarError, match="no such calibration file"):
        read_calibration(tmp_path / "missing.json")


def test_no_default_calibration_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(SofarError, match="run 'sofar-cost calibrate --threads 1'"):
        load_calibration()


def solved(costs: WidthCosts, budget_ms: float) -> int:
    width = solve_width(costs, Budget(latency_ms=budget_ms), "latency").width
    assert costs.metric(width, "latency") <= budget_ms < costs.metric(width + 1, "latency")
    return width


def tiny_net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), BinaryConvUnit(width, width),
                         BinaryConvUnit(width, width))


@pytest.mark.slow  # solves twice, packing each width
def test_solve_on_latency_is_deterministic_and_tight_on_a_small_net(calibration):
    costs = [WidthCosts(tiny_net, (1, 3, 8, 8), calibration=calibration) for _ in range(2)]
    budget = costs[0].metric(20, "latency")
    assert solved(costs[0], budget) == solved(costs[1], budget) == 20
    prediction = costs[0].latency(20)
    assert prediction.ms_packed == pytest.approx(sum(r["ms_packed"] for r in prediction.layers))


def test_latency_solve_needs_a_calibration():
    costs = WidthCosts.for_model("rf-c3d4-21", "imagenet")
    with pytest.raises(SofarError, match="needs a calibration"):
        costs.metric(8, "latency")


def test_a_calibration_without_network_coefficients_adds_ops_alone(calibration):
    op = engine_ops(meta_model("bireal18", 8), (1, 3, 64, 64), "torch_fp32")[0]
    assert calibration.network_op_ms(op, "packed") == calibration.op_ms(op)
    scaled = Calibration(calibration.key, {**calibration.coefficients, "network": NETWORK})
    assert scaled.network_op_ms(op, "packed") == pytest.approx(1.3 * calibration.op_ms(op) + 2e-3)
