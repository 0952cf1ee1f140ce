"""The binary-layer rules of the tracer: subclass matching, binary weights on real input,
and the weight-scaling switch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sofar_cost.binary import (
    BinaryConv2d,
    BinaryLinear,
    has_binary_input,
    is_binary_layer,
    register_binary_layer,
    sign,
)
from sofar_cost.tracer import trace


def _net(conv: nn.Module) -> nn.Module:
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(16 * 8 * 8, 10, bias=False))


CONV_WEIGHTS = 8 * 16 * 9
CONV_MACS = CONV_WEIGHTS * 64
HEAD = 16 * 64 * 10


@register_binary_layer
class RegisteredConv(nn.Conv2d):
    pass


class SubclassOfRegistered(RegisteredConv):
    """Not registered itself: matches through its registered base (as larq's profile does)."""


def test_subclass_of_registered_class_is_binary() -> None:
    conv = SubclassOfRegistered(8, 16, 3, padding=1, bias=False)
    assert is_binary_layer(conv)
    assert not is_binary_layer(nn.Conv2d(8, 16, 3))
    report = trace(_net(conv), (1, 8, 8, 8))
    assert (report.binary_params, report.binary_macs) == (CONV_WEIGHTS, CONV_MACS)
    # the explicit marker still wins over the registry
    conv.sofar_binary = False
    assert trace(_net(conv), (1, 8, 8, 8)).binary_macs == 0


def test_binary_weights_on_real_input_count_binary_params_and_fp_macs() -> None:
    conv = BinaryConv2d(8, 16, 3, padding=1, binary_input=False)
    assert is_binary_layer(conv) and not has_binary_input(conv)
    report = trace(_net(conv), (1, 8, 8, 8))
    assert report.binary_params == CONV_WEIGHTS and report.binary_macs == 0
    assert report.fp_params == HEAD and report.fp_macs == CONV_MACS + HEAD


def test_binary_input_marker_on_a_user_module() -> None:
    class WeightOnlyBinary(nn.Conv2d):
        sofar_binary = True
        sofar_binary_input = False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self._conv_forward(x, sign(self.weight), self.bias)

    report = trace(_net(WeightOnlyBinary(8, 16, 3, padding=1, bias=False)), (1, 8, 8, 8))
    assert (report.binary_params, report.binary_macs, report.fp_macs) == (
        CONV_WEIGHTS, 0, CONV_MACS + HEAD
    )  # fmt: skip


def test_forward_follows_the_switches() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    w = torch.randn(16, 8, 3, 3)
    scale = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    cases = {
        (True, True): F.conv2d(sign(x), scale * sign(w), padding=1),
        (True, False): F.conv2d(sign(x), sign(w), padding=1),
        (False, False): F.conv2d(x, sign(w), padding=1),
    }
    for (binary_input, scale_weights), want in cases.items():
        conv = BinaryConv2d(8, 16, 3, padding=1, binary_input=binary_input,
                            scale_weights=scale_weights)  # fmt: skip
        conv.weight.data.copy_(w)
        torch.testing.assert_close(conv(x), want)
    linear = BinaryLinear(8, 4, scale_weights=False, binary_input=False)
    assert "binary_input=False, scale_weights=False" in repr(linear)
    v = torch.randn(3, 8)
    torch.testing.assert_close(linear(v), v @ sign(linear.weight).T)
