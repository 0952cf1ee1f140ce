"""Bi-Real ResNet18/34 (Liu et al. 2018) and larq-zoo's BinaryResNetE18 (Bethge et al. 2019).

In both, every binary 3x3 conv carries its own shortcut. BinaryResNetE18 differs only around
the edges: a BN after the stem's max-pool, a ReLU before the classifier, and plain sign(W)
weights (larq's ``SteSign``) instead of Bi-Real's magnitude-aware sign.
"""

from __future__ import annotations

from torch import nn

from sofar_cost.models.architectures import BIREAL_BLOCKS
from sofar_cost.models.layers import (
    BinaryConvUnit,
    ClassifierHead,
    DatasetSpec,
    StagedNet,
    imagenet_only,
    stem,
)


def bireal_stages(depth: int, width: int, scale_weights: bool = True) -> nn.Sequential:
    """A ResNet basic block is two Bi-Real units (sign -> conv -> BN, + x); width doubles."""
    stages: list[nn.Module] = []
    in_channels = width
    for index, blocks in enumerate(BIREAL_BLOCKS[depth]):
        out_channels = width * 2**index
        units = []
        for unit in range(2 * blocks):
            stride = 2 if index > 0 and unit == 0 else 1
            units.append(
                BinaryConvUnit(in_channels, out_channels, stride, scale_weights=scale_weights)
            )
            in_channels = out_channels
        stages.append(nn.Sequential(*units))
    return nn.Sequential(*stages)


def bireal_resnet(depth: int, width: int, dataset: DatasetSpec) -> StagedNet:
    """Bi-Real ResNet18/34 at base width ``width``."""
    return StagedNet(
        stem(width, dataset),
        bireal_stages(depth, width),
        ClassifierHead(width * 8, dataset.num_classes),
    )


def binary_resnet_e(width: int, dataset: DatasetSpec) -> StagedNet:
    """larq-zoo's BinaryResNetE18 (``larq_zoo.literature.BinaryResNetE18``), ImageNet."""
    imagenet_only("binary-resnet-e18", dataset)
    return StagedNet(
        nn.Sequential(*stem(width, dataset), nn.BatchNorm2d(width)),
        bireal_stages(18, width, scale_weights=False),
        ClassifierHead(width * 8, dataset.num_classes, pre=nn.ReLU()),
    )
