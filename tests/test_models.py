"""Model zoo: every preset builds on both datasets, trains, and has the paper's structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d, binarize_activation, binarize_weight, sign
from sofar_cost.errors import SofarError
from sofar_cost.models import ALIASES, PRESETS, create_model, list_models, resolve
from sofar_cost.models.fractal_resnet import FractalBlock, fractal_depth
from sofar_cost.models.layers import BinaryConvUnit
from sofar_cost.models.registry import natural_key

REQUIRED = [
    "bireal18", "bireal34", "binarydensenet28", "binarydensenet37", "binarydensenet45",
    "bdn51", "bdn69", "rf-c3d4-21", "rf-c4d8-37", "rf-c5d16-69", "rf-c3d4-41", "rf-c4d8-77",
    "rf-c5d16-149", "drf-c2d2-51", "drf-c2d2-69", "drf-c3d4-97", "drf-c3d4-133", "f-c3d4-21",
    "f-c3d4-41", "df-c2d2-51", "df-c2d2-69",
]  # fmt: skip


LARQ_ZOO = [
    "binary-alexnet", "xnornet", "binary-resnet-e18", "real-to-binary-net",
    "binarydensenet37-dilated", "meliusnet22", "quicknet-small", "quicknet", "quicknet-large",
]  # fmt: skip (ImageNet only: tests/test_larq_zoo.py)


def test_every_required_name_is_a_preset() -> None:
    assert sorted(REQUIRED + LARQ_ZOO, key=natural_key) == list_models()
    assert ALIASES == {
        "rf-c3d4": "rf-c3d4-21",
        "rf-c4d8": "rf-c4d8-37",
        "rf-c5d16": "rf-c5d16-69",
        "drf-c2d2": "drf-c2d2-51",
    }


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("dataset", ["imagenet", "cifar100"])
def test_preset_builds_and_runs_on_meta(name: str, dataset: str) -> None:
    size, classes = (224, 1000) if dataset == "imagenet" else (32, 100)
    with torch.device("meta"):
        model = create_model(name, dataset)
        out = model.eval()(torch.zeros(2, 3, size, size))
    assert out.shape == (2, classes)
    assert model.sofar_width == PRESETS[name].widths[dataset]


@pytest.mark.parametrize("name", ["rf-c3d4-21", "drf-c2d2-51", "binarydensenet28",
                                  pytest.param("bdn51", marks=pytest.mark.slow)])  # full width
def test_models_train_on_cifar(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, "cifar100", width=8 if name.startswith(("rf", "drf")) else None)
    out = model(torch.randn(2, 3, 16, 16))  # any size runs every layer (global pool): fast
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_wildcards_and_aliases() -> None:
    assert list_models("rf-*") == ["rf-c3d4-21", "rf-c3d4-41", "rf-c4d8-37", "rf-c4d8-77",
                                   "rf-c5d16-69", "rf-c5d16-149"]  # natural order  # fmt: skip
    assert resolve("rf-c4d8").name == "rf-c4d8-37"
    assert resolve("DRF-C2D2").name == "drf-c2d2-51"


def test_fractal_names_beyond_presets() -> None:
    spec = resolve("rf-c6d32-133")
    assert spec.columns == 6 and spec.baseline == "bireal18"
    assert fractal_depth(6, (1, 1, 1, 1)) == 133
    with torch.device("meta"):
        model = create_model("rf-c6d32-133", "cifar100", width=4)
    assert sum(isinstance(m, BinaryConv2d) for m in model.modules()) == 4 * 63


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rf-c4d9", "did you mean: rf-c4d8"),
        ("rf-c7d64-261", "columns must be 1..6"),
        ("drf-c5d16-200", "columns must be 1..4"),
        ("rf-c4d4-37", "depth d8"),
        ("rf-c4d8-38", "valid depths: 37, 77"),
        ("resnet50", "unknown model"),
    ],
)
def test_bad_names_give_one_line_errors(name: str, message: str) -> None:
    with pytest.raises(SofarError, match=message) as info:
        resolve(name)
    assert "\n" not in str(info.value)


def test_bad_width_and_dataset() -> None:
    with pytest.raises(SofarError, match="width must be an integer"):
        create_model("bireal18", width=0)
    with pytest.raises(SofarError, match="did you mean: cifar100"):
        create_model("bireal18", "cifar10")
    with pytest.raises(SofarError, match="no default width for imagenet; give a width"):
        create_model("rf-c6d32-133")


@pytest.mark.parametrize("columns", [1, 2, 3, 4, 5])
def test_fractal_block_has_2c_minus_1_convs_and_c_way_join(columns: int) -> None:
    block = FractalBlock(columns, 4)
    assert sum(isinstance(m, BinaryConv2d) for m in block.modules()) == 2**columns - 1
    assert len(block.branches(torch.randn(1, 4, 5, 5))) == columns


def test_ablation_removes_only_the_shortcuts() -> None:
    rf = create_model("rf-c3d4-21", "cifar100", width=4)
    f = create_model("f-c3d4-21", "cifar100", width=4)
    assert sum(p.numel() for p in rf.parameters()) == sum(p.numel() for p in f.parameters())
    assert all(u.shortcut is None for u in f.modules() if isinstance(u, BinaryConvUnit))
    assert all(u.shortcut is not None for u in rf.modules() if isinstance(u, BinaryConvUnit))


def test_sign_and_its_piecewise_polynomial_gradient() -> None:
    x = torch.tensor([-1.5, -0.5, 0.0, 0.25, 0.75, 2.0], requires_grad=True)
    y = binarize_activation(x)
    assert y.tolist() == [-1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 1.0, 2.0, 1.5, 0.5, 0.0]))


def test_weight_binarization_is_mean_abs_times_sign() -> None:
    w = torch.tensor([[[[0.5]], [[-1.5]]], [[[2.0]], [[-2.0]]]], requires_grad=True)
    wb = binarize_weight(w)
    expected = torch.tensor([[1.0, -1.0], [2.0, -2.0]]).view(2, 2, 1, 1)
    assert torch.allclose(wb, expected)
    wb.sum().backward()
    # dL/dW ~= E * dL/dW_b (eq. 1)
    assert torch.allclose(w.grad.view(2, 2), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    assert torch.equal(sign(torch.tensor([0.0, -0.0, -1e-9])), torch.tensor([1.0, 1.0, -1.0]))


def test_binary_conv_can_be_switched_to_float() -> None:
    conv = BinaryConv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 5, 5)
    conv.binarize = False
    assert torch.allclose(conv(x), nn.functional.conv2d(x, conv.weight, padding=1))
