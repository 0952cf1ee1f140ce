"""What a trace did not count: uncounted ops, sign-fed layers not marked binary; roll-ups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sofar_cost.counting import FREE_OPS, may_multiply
from sofar_cost.errors import SofarError
from sofar_cost.models.registry import list_models, natural_key
from sofar_cost.tracer import trace
from tests.conftest import cost


class SpectralMixer(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x), s=x.shape[-2:])


class SteSign(nn.Module):
    """The straight-through binarizer, outside any binary layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (torch.sign(x) - x).detach()


def _net(*middle: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), *middle, nn.Flatten(), nn.Linear(64, 2))


@pytest.mark.parametrize(("name", "dataset"), [("bireal18", "imagenet"),
                                               ("binarydensenet28", "imagenet"),
                                               ("rf-c3d4-21", "cifar100")])  # fmt: skip
def test_presets_leave_nothing_uncounted(name: str, dataset: str) -> None:
    report = cost(name, dataset)
    assert report.uncounted_ops == {} and report.unmarked_sign_layers == []
    assert report.uncounted_summary() is None and report.unmarked_sign_summary() is None


def test_fft_ops_are_reported_as_uncounted_multiplications() -> None:
    with torch.device("meta"):
        model = _net(SpectralMixer(), nn.Hardtanh())
    report = trace(model, (1, 3, 4, 4))
    assert report.uncounted_ops == {"aten._fft_r2c": 1, "aten._fft_c2r": 1, "aten.hardtanh": 1}
    assert report.multiplying_uncounted_ops == {"aten._fft_r2c": 1, "aten._fft_c2r": 1}
    summary = report.uncounted_summary()
    assert summary is not None and "aten._fft_r2c x1" in summary and "hardtanh" not in summary
    assert report.summary()["uncounted_multiplying_ops"] == {"aten._fft_r2c": 1,
                                                             "aten._fft_c2r": 1}  # fmt: skip


def test_free_ops_are_not_reported() -> None:
    class Shuffle(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.cat([x, x.flip(1)], 1).view(1, 8, 16).transpose(1, 2).contiguous()
            return y.reshape(1, 8, 4, 4)[:, :4].clone()

    report = trace(_net(Shuffle()), (1, 3, 4, 4))
    assert report.uncounted_ops == {}
    assert {"view", "cat", "clone", "transpose", "empty", "fill_"} <= FREE_OPS


def test_custom_operators_count_as_possible_multiplications() -> None:
    @torch.library.custom_op("sofar_test::mix", mutates_args=())
    def mix(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @mix.register_fake
    def _(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    class Mix(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return mix(x)

    with torch.device("meta"):
        model = _net(Mix())
    assert trace(model, (1, 3, 4, 4)).multiplying_uncounted_ops == {"sofar_test.mix": 1}
    assert may_multiply("aten.baddbmm") and may_multiply("aten._scaled_dot_product_attention")
    assert not may_multiply("aten.sigmoid") and not may_multiply("aten.abs")


def test_sign_fed_layers_that_are_not_marked_binary_are_named() -> None:
    report = trace(_net(SteSign(), nn.Conv2d(4, 4, 3, padding=1), SteSign()), (1, 3, 4, 4))
    assert report.unmarked_sign_layers == ["2", "5"]  # the conv and the linear
    note = report.unmarked_sign_summary()
    assert note is not None and "sofar_binary = True" in note and "register_binary_layer" in note

    class Marked(nn.Conv2d):
        sofar_binary = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x + (torch.sign(x) - x).detach())

    marked = trace(_net(Marked(4, 4, 3, padding=1)), (1, 3, 4, 4))
    assert marked.unmarked_sign_layers == [] and marked.binary_macs == 4 * 4 * 9 * 16
    assert marked.uncounted_ops == {}  # sign inside a binary layer is folded bookkeeping


def test_roll_up_to_a_module_depth_keeps_the_totals() -> None:
    report = cost("bireal18", "imagenet")
    top = report.rolled_up(1)
    names = [layer.name for layer in top.layers]
    assert all("." not in n for n in names) and len(names) == len(set(names))
    assert {"stem", "stages", "head"} <= set(names)
    for attr in ("fp_params", "binary_params", "fp_macs", "binary_macs", "params_mbit", "flops"):
        assert getattr(top, attr) == getattr(report, attr)
    stages = next(layer for layer in top.layers if layer.name == "stages")
    assert stages.binary_macs == report.binary_macs
    assert not stages.binary  # it holds the full-precision downsampling convs too
    deeper = report.rolled_up(2)
    assert len(top.layers) < len(deeper.layers) <= len(report.layers)
    assert [r.name for r in report.rolled_up(99).layers] == [r.name for r in report.layers]
    with pytest.raises(SofarError, match="--depth"):
        report.rolled_up(0)


def test_names_sort_naturally() -> None:
    assert sorted(["rf-c5d16-149", "rf-c5d16-69", "bdn51"], key=natural_key) == [
        "bdn51", "rf-c5d16-69", "rf-c5d16-149",
    ]  # fmt: skip
    names = list_models("rf-c5d16-*")
    assert names == ["rf-c5d16-69", "rf-c5d16-149"]
    assert list_models("drf-*")[-2:] == ["drf-c3d4-97", "drf-c3d4-133"]
