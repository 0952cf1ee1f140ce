"""A user's own binary network, as it would live in their repository (no sofar_cost import).

Its binary conv is marked with ``sofar_binary = True`` and binarizes its input with the
straight-through form ``x + (sign(x) - x).detach()`` and its weight the same way, so it
computes ``conv2d(sign(x), sign(W))``, which the packed engine runs too. Hand counts at
``width=w`` on a 1x3xHxW input (tests/test_model_source.py, tests/test_specs_cli.py): stem
27*w params and H*W*w*27 FP MACs, binary conv 9*w*w params and H*W*w*9*w binary MACs,
classifier w*classes params and MACs (its bias does not count by default).
"""

from __future__ import annotations

import torch
from torch import nn


class SignBinaryConv(nn.Conv2d):
    sofar_binary = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + (torch.sign(x) - x).detach()
        w = self.weight + (torch.sign(self.weight) - self.weight).detach()
        return self._conv_forward(x, w, self.bias)


class UserNet(nn.Module):
    def __init__(self, width: int, classes: int, fft: bool, marked: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.binary = SignBinaryConv(width, width, 3, padding=1, bias=False)
        self.binary.sofar_binary = marked
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)
        self.fft = fft

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.stem(x))
        x = self.bn2(self.binary(x))
        if self.fft:  # a spectral mixer: multiplications no counting rule knows
            x = torch.fft.irfft2(torch.fft.rfft2(x), s=x.shape[-2:])
        return self.fc(self.pool(x).flatten(1))


def make(width: int = 16, classes: int = 10, fft: bool = False, marked: bool = True) -> nn.Module:
    return UserNet(width, classes, fft, marked)


def broken(width: int = 16) -> nn.Module:
    raise ValueError("this factory always fails")


def not_a_module(width: int = 16) -> int:
    return width


def item_in_forward(width: int = 8) -> nn.Module:
    """A model that reads a value while running: it cannot trace on meta (CPU fallback)."""

    class ReadsValue(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y * (1.0 if float(y.abs().sum()) >= 0 else 2.0)

    return ReadsValue()
