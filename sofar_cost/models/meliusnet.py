"""MeliusNet22 (Bethge et al. 2020) as ``larq_zoo.literature.MeliusNet22`` defines it.

Each block is a dense block (BN -> binary 3x3 conv, 64 new channels concatenated) followed by
an improvement block (BN -> binary 3x3 conv whose 64 outputs are added to the last 64
channels). Between sections, BinaryDenseNet's transition (BN, max-pool, ReLU, FP 1x1 conv).
The stem is three full-precision convs, the last two grouped (larq-zoo splits the channels
and runs one conv per group: the same weights and MACs as one grouped conv).
"""

from __future__ import annotations

import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d
from sofar_cost.models.densenet import DenseLayer, Transition
from sofar_cost.models.layers import ClassifierHead, DatasetSpec, StagedNet, imagenet_only

MELIUSNET22_BLOCKS = (4, 5, 4, 4)
MELIUSNET22_TRANSITIONS = (160, 224, 256)  # at growth 64; none after the last section
GROWTH = 64


class ImprovementBlock(nn.Module):
    """BN -> binary 3x3 conv (C -> growth), added to the input's last ``growth`` channels."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.conv = BinaryConv2d(channels, growth, 3, padding=1, scale_weights=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        improved = self.conv(self.bn(x))
        keep = x.shape[1] - improved.shape[1]
        return torch.cat([x[:, :keep], x[:, keep:] + improved], dim=1)


def grouped_stem() -> nn.Sequential:
    """3x3/2 conv 3 -> 32, 3x3 conv 32 -> 32 in 4 groups, 3x3 conv 32 -> 64 in 8 groups (each
    with BN and ReLU), then 2x2 max-pool: 224 -> 56."""
    layers: list[nn.Module] = []
    for cin, cout, stride, groups in ((3, 32, 2, 1), (32, 32, 1, 4), (32, 64, 1, 8)):
        layers += [
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


def meliusnet22(width: int, dataset: DatasetSpec) -> StagedNet:
    """MeliusNet22 with growth ``width`` (64); transition widths scale with it."""
    imagenet_only("meliusnet22", dataset)
    stages: list[nn.Module] = []
    channels = 64  # the stem's output
    for index, blocks in enumerate(MELIUSNET22_BLOCKS):
        modules: list[nn.Module] = []
        for _ in range(blocks):
            modules.append(DenseLayer(channels, width, scale_weights=False))
            channels += width
            modules.append(ImprovementBlock(channels, width))
        if index < len(MELIUSNET22_TRANSITIONS):
            reduced = MELIUSNET22_TRANSITIONS[index] * width // GROWTH
            modules.append(Transition(channels, reduced))
            channels = reduced
        stages.append(nn.Sequential(*modules))
    head = ClassifierHead(
        channels, dataset.num_classes, pre=nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
    )
    return StagedNet(grouped_stem(), nn.Sequential(*stages), head)
