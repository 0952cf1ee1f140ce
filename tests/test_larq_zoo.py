"""The larq-zoo presets count exactly what larq's own profile counts for the originals.

larq's integers come from ``benchmarks/larq_zoo_counts.py`` (run in the TensorFlow peer
environment) and are pinned in tests/data/larq_zoo_counts.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d, BinaryLinear
from sofar_cost.costs import model_cost
from sofar_cost.counting import LARQ_COUNTING
from sofar_cost.errors import SofarError
from sofar_cost.models import PRESETS, create_model

LARQ_ZOO_MODELS = sorted(n for n, spec in PRESETS.items() if spec.family == "larq-zoo")

PINNED = json.loads((Path(__file__).parent / "data" / "larq_zoo_counts.json").read_text())
LARQ = PINNED["models"]


def test_pinned_file_says_how_it_was_made() -> None:
    assert PINNED["command"] == "/work/tfenv/bin/python benchmarks/larq_zoo_counts.py"
    assert PINNED["versions"]["larq"] == "0.14.0"
    assert PINNED["versions"]["larq-zoo"] == "2.4.0"
    # every larq-zoo preset, plus the existing presets larq-zoo also defines
    existing = {"bireal18", "binarydensenet28", "binarydensenet37", "binarydensenet45"}
    assert set(LARQ) == {*LARQ_ZOO_MODELS, *existing}


@pytest.mark.parametrize("name", sorted(LARQ))
def test_counts_equal_larq(name: str) -> None:
    ours = model_cost(name, "imagenet", options=LARQ_COUNTING)
    larq = LARQ[name]
    assert (ours.binary_params, ours.binary_macs, ours.fp_macs) == (
        larq["binary_params"],
        larq["binary_macs"],
        larq["fp_macs"],
    )
    # larq counts every BatchNorm as 2C (moving statistics); we count its affine parameters,
    # so only BatchNorms without them (QuickNet's stem) make a difference.
    with torch.device("meta"):
        model = create_model(name)
    plain_bn = sum(
        2 * m.num_features
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.affine
    )
    assert ours.fp_params + plain_bn == larq["fp_params"]


@pytest.mark.parametrize("name", sorted(LARQ_ZOO_MODELS))
def test_larq_zoo_preset_runs(name: str) -> None:
    spec = PRESETS[name]
    assert spec.family == "larq-zoo" and list(spec.widths) == ["imagenet"]
    with torch.device("meta"):
        out = create_model(name).eval()(torch.zeros(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    with pytest.raises(SofarError, match="ImageNet only"):
        create_model(name, "cifar100", width=spec.widths["imagenet"])


def test_larq_zoo_layers_are_the_toolkits_binary_layers() -> None:
    """The engine recognises binary layers by class and reads the two switches."""
    with torch.device("meta"):
        alexnet = create_model("binary-alexnet")
        quicknet = create_model("quicknet")
    first = alexnet[0]
    assert isinstance(first, BinaryConv2d) and not first.binary_input
    assert all(not m.scale_weights for m in alexnet.modules() if isinstance(m, BinaryLinear))
    binary = [m for m in quicknet.modules() if isinstance(m, BinaryConv2d)]
    assert len(binary) == 16 and all(m.binary_input and not m.scale_weights for m in binary)


def test_binary_alexnet_first_layer_has_binary_weights_and_fp_macs() -> None:
    report = model_cost("binary-alexnet")
    first = next(layer for layer in report.layers if layer.name == "0")
    assert first.binary_params == 64 * 3 * 11 * 11 and first.fp_params == 0
    assert first.fp_macs == 64 * 3 * 11 * 11 * 56 * 56 and first.binary_macs == 0


def test_width_scales_a_larq_zoo_preset() -> None:
    half = model_cost("quicknet", width=32)
    assert 0 < half.binary_params < model_cost("quicknet").binary_params
