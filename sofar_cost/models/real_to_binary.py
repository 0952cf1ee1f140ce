"""Real-to-Binary Net (Martinez et al. 2020), the BNN of ``larq_zoo.literature.RealToBinaryNet``.

A ResNet18 layout of "half blocks": BN -> binary 3x3 conv, whose output is rescaled per
channel by a squeeze-and-excite gate computed from the (real-valued) conv input, then PReLU
and the shortcut add. Weights are plain sign(W) (larq's ``ste_sign``).
"""

from __future__ import annotations

import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d
from sofar_cost.models.layers import (
    ClassifierHead,
    DatasetSpec,
    StagedNet,
    downsample,
    imagenet_only,
)

GATE_REDUCTION = 8  # larq-zoo's scaling_r


class RealToBinaryUnit(nn.Module):
    """One half block: ``prelu(conv(bn(x)) * gate(bn(x))) + shortcut(x)``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.shortcut = (
            downsample(in_channels, out_channels, stride)
            if in_channels != out_channels
            else nn.Identity()
        )
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = BinaryConv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, scale_weights=False
        )
        hidden = in_channels // GATE_REDUCTION
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(in_channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, out_channels, bias=False),
            nn.Sigmoid(),
        )
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(x)
        scaled = self.conv(y) * self.gate(y)[:, :, None, None]
        return self.prelu(scaled) + self.shortcut(x)


def real_to_binary_net(width: int, dataset: DatasetSpec) -> StagedNet:
    """Stem 7x7/2 conv, BN, PReLU, max-pool; four stages of two blocks (= four half blocks),
    width doubling with stride 2 at stages 2-4; pool and a linear classifier."""
    imagenet_only("real-to-binary-net", dataset)
    stages: list[nn.Module] = []
    channels = width
    for index in range(4):
        out_channels = width * 2**index
        units = [RealToBinaryUnit(channels, out_channels, 2 if index else 1)]
        units += [RealToBinaryUnit(out_channels, out_channels) for _ in range(3)]
        stages.append(nn.Sequential(*units))
        channels = out_channels
    stem_module = nn.Sequential(
        nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.PReLU(width),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    return StagedNet(
        stem_module, nn.Sequential(*stages), ClassifierHead(channels, dataset.num_classes)
    )
