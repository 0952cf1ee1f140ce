"""Packed end-to-end inference equals the PyTorch models (every preset, both datasets).

Why the weights are made "dyadic" and most presets are compared in float64: a binary net
takes signs, and with random weights a single flipped sign cascades into logits that differ
by ~10%. Values that are exactly 0 (a binary conv's output feeding the next sign directly,
as in bdn51's split block) are 0 in the packed kernels but +-1e-8 rounding noise in torch's
float32 conv, and BN folding rounds differently from torch's BN. Binary weights of magnitude
m / 2^10 per output channel make every E * popcount sum exact in torch too, and float64
leaves no rounding near a sign threshold, so equality then holds to ~1e-15 for every preset.
Float32 equality (what is deployed) is checked on one preset per family at full width.

Why the inputs are smaller than the datasets' images: the nets end in a global average pool,
so any size runs the same layers with the same kernels, strides and padding; only the time
spent in torch's float64 convs shrinks. CIFAR-100 presets run at full width (every channel
count, several 64-bit words per pixel) on 16x16 inputs; ImageNet presets at width 8 on
128x128 inputs, whose 32x32 first stage still splits each conv into two pixel chunks
(``kernels._conv_kernel.CHUNK``); bireal18 also runs as deployed: 224x224, full width, float32.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d, BinaryLinear, sign
from sofar_cost.engine import (
    PackedConv,
    PackedConvUnit,
    PackedHead,
    PackedUnitRun,
    ReluMaxPool,
    TorchBinaryLayer,
    benchmark_end_to_end,
    pack_model,
)
from sofar_cost.errors import SofarError
from sofar_cost.models import PRESETS, create_model, list_models
from sofar_cost.models.layers import DATASETS, BinaryConvUnit, ClassifierHead

IMAGENET_WIDTH = 8  # reduced widths keep ImageNet nets fast; every block type is still built
# The larq-zoo presets are ImageNet only, and some (AlexNet's dense layers) need 224x224.
SOFAR_PRESETS = [name for name in list_models() if PRESETS[name].family != "larq-zoo"]
LARQ_ZOO_PRESETS = [name for name in list_models() if PRESETS[name].family == "larq-zoo"]
LARQ_ZOO_FAST = {"binary-resnet-e18", "quicknet-small", "real-to-binary-net"}
IMAGE_SIZE = {"cifar100": 16, "imagenet": 128}  # see the module doc
# One preset per family is also checked in float32 (the others of a family differ only in how
# often a block repeats). The fast edit loop keeps the cheapest four of them, on ImageNet at
# width 8; every other case (CIFAR-100 at full width, the deep DenseNets) is marked slow.
FAMILY_REPRESENTATIVES = {"bireal34", "binarydensenet28", "bdn51", "rf-c4d8-37", "f-c3d4-21",
                          "drf-c2d2-51", "df-c2d2-51"}  # fmt: skip
FAST = {"bireal34", "binarydensenet28", "rf-c4d8-37", "f-c3d4-21"}
PRESET_CASES = [
    pytest.param(name, dataset, marks=[] if fast else [pytest.mark.slow])
    for name in SOFAR_PRESETS
    for dataset in ("cifar100", "imagenet")
    for fast in [dataset == "imagenet" and name in FAST]
]


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics/affine and exactly summable binary weights (see module doc)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                if module.affine:  # QuickNet's stem BN has no scale or centre
                    module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                    module.bias.copy_(0.1 * torch.randn(c, generator=gen))
            elif isinstance(module, BinaryConv2d):
                w = module.weight
                mag = (8 + torch.randint(0, 8, (w.shape[0], 1, 1, 1), generator=gen)) / 2**10
                w.copy_(torch.where(w >= 0, mag, -mag))
    return model.eval()


def max_rel_error(model: nn.Module, size: int, dtype: torch.dtype) -> float:
    """max |packed - torch| / max |torch| over the logits of two size x size images (the model
    is converted in place: float32 -> float64 -> float32 is exact)."""
    x = torch.randn(2, 3, size, size, generator=torch.manual_seed(1), dtype=dtype)
    model = model.to(dtype)
    packed = pack_model(model)
    with torch.inference_mode():
        want, got = model(x), packed(x)
    assert got.dtype == dtype and got.shape == want.shape
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize(("name", "dataset"), PRESET_CASES)
def test_every_preset_equals_torch(name: str, dataset: str) -> None:
    width = IMAGENET_WIDTH if dataset == "imagenet" else None
    model = randomized(create_model(name, dataset, width))
    assert max_rel_error(model, IMAGE_SIZE[dataset], torch.float64) < 1e-9
    if name in FAMILY_REPRESENTATIVES:
        assert max_rel_error(model, IMAGE_SIZE[dataset], torch.float32) < 1e-4


@pytest.mark.parametrize("name", ["bireal18", "binarydensenet28"])
def test_parallel_engine_equals_torch(name: str, two_threads: None) -> None:
    """The parallel kernels (the other engine tests run the serial twins: conftest)."""
    model = randomized(create_model(name, "imagenet", IMAGENET_WIDTH))
    assert max_rel_error(model, 64, torch.float64) < 1e-9


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=[] if name in LARQ_ZOO_FAST else [pytest.mark.slow])
    for name in LARQ_ZOO_PRESETS
])  # fmt: skip
def test_every_larq_zoo_preset_equals_torch(name: str) -> None:
    """Binary dense layers, dilated and grouped convs, binary weights on real input, plain
    sign(W) and +1 padding: at a quarter of the base width, 224x224."""
    model = randomized(create_model(name, "imagenet", PRESETS[name].widths["imagenet"] // 4))
    assert max_rel_error(model, 224, torch.float64) < 1e-9
    if name == "quicknet-small":
        assert max_rel_error(model, 224, torch.float32) < 1e-4


@pytest.mark.slow  # full width at 224x224: a few seconds
def test_bireal18_as_deployed_equals_torch_float32() -> None:
    model = randomized(create_model("bireal18", "imagenet"))
    assert max_rel_error(model, DATASETS["imagenet"].image_size, torch.float32) < 1e-4


def test_structure_and_original_untouched() -> None:
    model = create_model("bireal18", "cifar100").eval()
    before = copy.deepcopy(model.state_dict())
    packed = pack_model(model)
    assert not any(isinstance(m, BinaryConv2d) for m in packed.modules())
    assert sum(isinstance(m, PackedConvUnit) for m in packed.modules()) == 16
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, BinaryConv2d) for m in model.modules())
    # the four stages are one run: each stage's last unit packs the next stage's input
    assert [type(m) for m in packed.stages] == [PackedUnitRun]
    out = packed.stages[0].units[0](torch.randn(1, 64, 8, 8))
    assert out.is_contiguous()  # NCHW: the layout the next layer packs without a copy
    assert packed(torch.randn(1, 3, 32, 32)).shape == (1, 100)  # outside no_grad too


class Block(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_non_conv_binary_layer_is_named_in_the_error() -> None:
    conv1d = nn.Conv1d(4, 4, 3)
    conv1d.sofar_binary = True
    with pytest.raises(SofarError, match=r"1\.conv \(Conv1d\).*only binary Conv2d and Linear"):
        pack_model(nn.Sequential(nn.Identity(), Block(conv1d)))


class SignConv(nn.Conv2d):
    """A user binary conv: conv2d(sign(x), sign(W)) + bias, no scale."""

    sofar_binary = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(sign(x), sign(self.weight), self.bias)


class HalfSignConv(SignConv):
    """Marked binary, but not what the packed kernel computes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * super().forward(x)


class BinaryMLP(nn.Linear):
    sofar_binary = True


def test_user_binary_conv_is_packed() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3), Block(SignConv(16, 8, 3, padding=1))).eval()
    packed = pack_model(model)
    assert isinstance(packed[1].conv, PackedConv)
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), model(x), rtol=1e-5, atol=1e-5)


def float_conv_marked_binary() -> nn.Conv2d:
    conv = nn.Conv2d(4, 4, 3)
    conv.sofar_binary = True  # a float conv counted as binary: packing it would change it
    return conv


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (float_conv_marked_binary(), r"1\.conv \(Conv2d\).*not conv2d/linear\(sign"),
        (HalfSignConv(4, 4, 3), r"1\.conv \(HalfSignConv\).*not conv2d/linear\(sign"),
        (BinaryMLP(4, 4), r"1\.conv \(BinaryMLP\).*not conv2d/linear\(sign"),
    ],
)
def test_unpackable_user_layers_are_named(layer: nn.Module, message: str) -> None:
    with pytest.raises(SofarError, match=message):
        pack_model(nn.Sequential(nn.Identity(), Block(layer)))


def test_benchmark_end_to_end_keys() -> None:
    result = benchmark_end_to_end("rf-c3d4-21", "cifar100", threads=1, repeat=1, progress=False)
    for key in ("ms_packed", "ms_torch_fp32", "ms_torch_binary_sim", "speedup_vs_fp32"):
        assert result[key] > 0
    assert result["model"] == "rf-c3d4-21" and result["threads"] == 1
    assert result["flops"] > 0 and isinstance(result["kernel_variant"], str)
    # paired rounds: every side timed in every round, spread reported per side
    assert result["rounds"] >= 1
    assert all(len(times) == result["rounds"] for times in result["ms_each_round"].values())
    assert len(result["speedup_vs_fp32_each_round"]) == result["rounds"]
    assert set(result["spread_pct"]) == set(result["ms_each_round"])


def test_dense_runs_and_transitions_are_fused() -> None:
    packed = pack_model(create_model("binarydensenet28", "cifar100"))
    kinds = [type(m).__name__ for m in packed.modules()]
    assert kinds.count("PackedDenseRun") == 4 and kinds.count("PackedTransition") == 3
    assert "DenseLayer" not in kinds and "BatchNorm2d" not in kinds  # the head's is fused
    assert kinds.count("PackedHead") == 1


@pytest.mark.parametrize("pre", [nn.Identity(), nn.ReLU(), nn.BatchNorm2d(6),
                                 nn.Sequential(nn.BatchNorm2d(6), nn.ReLU()),
                                 nn.Sequential(nn.BatchNorm2d(6), nn.Hardtanh())])
def test_classifier_head_equals_torch(pre: nn.Module) -> None:
    """The head's pre (fused when BN and/or ReLU, else run first), pool and classifier,
    on channels-last and NCHW input."""
    head = randomized(ClassifierHead(6, 5, pre=pre)).double()
    packed = pack_model(head)
    assert isinstance(packed, PackedHead)
    assert (packed.pre is None) == (type(pre) is not nn.Sequential or len(pre) < 2
                                    or type(pre[1]) is nn.ReLU)
    x = torch.randn(3, 6, 5, 4, generator=torch.manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        for layout in (torch.contiguous_format, torch.channels_last):
            got = packed(x.contiguous(memory_format=layout))
            torch.testing.assert_close(got, head(x), rtol=1e-12, atol=1e-12)
        if packed.pre is None:  # else torch's own module refuses it first
            with pytest.raises(SofarError, match=r"expected input \[N, 6, H, W\], got "):
                packed(x[:, :5])


class SwitchedConv(BinaryConv2d):
    """BinaryConv2d honouring larq-zoo's switches, set as attributes after construction
    (``binary_input=False``: real-valued input; ``scale_weights=False``: plain sign(W))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "binary_input", True):
            x = sign(x)
        w = sign(self.weight)
        if getattr(self, "scale_weights", True):
            w = w * self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


def switched(conv: SwitchedConv, **switches: bool) -> SwitchedConv:
    for name, value in switches.items():
        setattr(conv, name, value)
    return conv


@pytest.mark.parametrize(
    ("layer", "kind"),
    [
        (BinaryConv2d(8, 8, 3, padding=2, dilation=2), TorchBinaryLayer),
        (BinaryConv2d(8, 8, 3, padding=1, groups=2), TorchBinaryLayer),
        (switched(SwitchedConv(8, 8, 3, padding=1), binary_input=False), TorchBinaryLayer),
        (switched(SwitchedConv(8, 8, 3, padding=1, bias=True), scale_weights=False), PackedConv),
        (switched(SwitchedConv(8, 8, 3, stride=2, padding=1), binary_input=False,
                  scale_weights=False), TorchBinaryLayer),
    ],
)
def test_binary_conv_kinds_equal_torch(layer: nn.Module, kind: type) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), Block(layer)).double().eval()
    packed = pack_model(model)
    assert isinstance(packed[2].conv, kind)
    x = torch.randn(2, 3, 11, 11, generator=torch.manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), model(x), rtol=1e-9, atol=1e-9)


def test_binary_linear_is_packed() -> None:
    model = nn.Sequential(nn.Flatten(), BinaryLinear(48, 10, bias=True),
                          nn.ReLU(), BinaryLinear(10, 5)).double().eval()
    packed = pack_model(model)
    assert isinstance(packed[1], PackedConv) and isinstance(packed[3], PackedConv)
    x = torch.randn(3, 3, 4, 4, generator=torch.manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), model(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("shape", "size", "stride", "pad"), [
    ((1, 64, 112, 112), 3, 2, 1),  # the ImageNet stem: whole 8x8 blocks only
    ((2, 13, 23, 19), 3, 2, 1),  # edges in both directions, two images
    ((1, 24, 17, 33), 2, 2, 0),
    ((1, 8, 9, 9), 3, 1, 1),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relu_maxpool_equals_torch(shape: tuple[int, ...], size: int, stride: int, pad: int,
                                   dtype: torch.dtype) -> None:
    """The stem's ReLU + max-pool from channels-last input into NCHW (block transposes and
    element-wise edges), exactly as torch."""
    pool = nn.MaxPool2d(size, stride, pad)
    x = torch.randn(shape, generator=torch.manual_seed(0), dtype=dtype)
    got = ReluMaxPool(pool)(x.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous()
    assert torch.equal(got, pool(torch.relu(x)))


class PassThrough(nn.Module):
    """A shortcut module that returns its input itself (no copy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_unit_run_buffers_with_mixed_shortcuts() -> None:
    """A unit run whose units write over their residual (identity after a unit, Bi-Real's
    downsampling) beside units that must not: a torch shortcut that hands back the previous
    output itself, one that returns a copy, no shortcut; equal to torch in float64."""
    units = [BinaryConvUnit(8, 8), BinaryConvUnit(8, 8), BinaryConvUnit(8, 8),
             BinaryConvUnit(8, 8), BinaryConvUnit(8, 16, stride=2), BinaryConvUnit(16, 16),
             BinaryConvUnit(16, 16, residual=False), BinaryConvUnit(16, 16)]
    units[2].shortcut, units[3].shortcut = PassThrough(), nn.Sequential(nn.Identity(),
                                                                        nn.AvgPool2d(1))
    model = randomized(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *units)).double()
    packed = pack_model(model)
    assert [type(m) for m in packed][1:] == [PackedUnitRun]
    x = torch.randn(2, 3, 12, 12, generator=torch.manual_seed(0), dtype=torch.float64)
    with torch.inference_mode():
        want = model(x)
        for _ in range(2):  # buffers reused by the second forward
            torch.testing.assert_close(packed(x), want, rtol=1e-9, atol=1e-9)
