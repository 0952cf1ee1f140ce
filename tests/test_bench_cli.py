"""`sofar-cost bench`: the JSON contract and the layer list (timings are not asserted)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from sofar_cost.binary import BinaryConv2d
from sofar_cost.cli import app
from sofar_cost.errors import SofarError
from sofar_cost.layer_bench import binary_conv_shapes
from sofar_cost.models import create_model
from tests.conftest import cost

runner = CliRunner()


@pytest.mark.slow  # times every layer (end to end: the whole net) once
def test_bench_json_contract() -> None:
    result = runner.invoke(app, ["bench", "bireal18", "-d", "cifar100", "--repeat", "1",
                                 "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"layers", "total_ms_xnor", "total_ms_torch_fp32", "kernel_variant",
            "popcount_ceilings"} <= out.keys()
    assert out["kernel_variant"] in out["popcount_ceilings"]
    assert len(out["layers"]) == 16
    for layer in out["layers"]:
        assert {"name", "binary_macs", "ms_xnor", "ms_torch_fp32", "ms_xnor_iqr",
                "ms_torch_fp32_iqr", "speedup_iqr"} <= layer.keys()
        assert layer["ms_xnor"] > 0 and layer["ms_torch_fp32"] > 0
        # paired with the ceiling loop in the layer's own rounds: median within its quartiles
        low, high = layer["ceiling_fraction_iqr"]
        assert 0 < low <= layer["ceiling_fraction"] <= high < float("inf")
        if layer["scalar_ceiling_fraction"] is not None:
            low, high = layer["scalar_ceiling_fraction_iqr"]
            assert 0 < low <= layer["scalar_ceiling_fraction"] <= high
    assert sum(layer["binary_macs"] for layer in out["layers"]) == cost(
        "bireal18", "cifar100"
    ).binary_macs


def test_layer_shapes_cover_every_binary_conv() -> None:
    with torch.device("meta"):
        model = create_model("rf-c3d4-21", "imagenet")
    shapes = binary_conv_shapes(model, (1, 3, 224, 224))
    assert len(shapes) == 4 * 7
    assert sum(s.binary_macs for s in shapes) == cost("rf-c3d4-21").binary_macs


def test_unsupported_layer_is_named() -> None:
    model = nn.Sequential(BinaryConv2d(4, 4, 3, padding=1, groups=2))
    with pytest.raises(SofarError, match=r"layer 0: groups=2"):
        binary_conv_shapes(model, (1, 4, 8, 8))


def test_bench_bad_threads() -> None:
    result = runner.invoke(app, ["bench", "bireal18", "--threads", "0"])
    assert result.exit_code == 2 and "--threads must be at least 1" in result.output


def test_bench_unknown_kernel() -> None:
    result = runner.invoke(app, ["bench", "bireal18", "--kernel", "neon"])
    assert result.exit_code == 2 and "unknown kernel 'neon'" in result.output


@pytest.mark.slow  # times every layer (end to end: the whole net) once
def test_bench_end_to_end_json_contract() -> None:
    result = runner.invoke(app, ["bench", "rf-c3d4", "-d", "cifar100", "--end-to-end",
                                 "--repeat", "1", "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"model", "flops", "ms_packed", "ms_torch_fp32", "ms_torch_binary_sim"} <= out.keys()
    assert out["flops"] == cost("rf-c3d4-21", "cifar100").flops
