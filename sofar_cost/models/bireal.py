"""Bi-Real ResNet18/34 (Liu et al. 2018): every binary 3x3 conv carries its own shortcut."""

from __future__ import annotations

from torch import nn

from sofar_cost.models.architectures import BIREAL_BLOCKS
from sofar_cost.models.layers import BinaryConvUnit, ClassifierHead, DatasetSpec, StagedNet, stem


def bireal_resnet(depth: int, width: int, dataset: DatasetSpec) -> StagedNet:
    """Bi-Real ResNet: a ResNet basic block is two Bi-Real units (sign -> conv -> BN, + x)."""
    stages: list[nn.Module] = []
    in_channels = width
    for index, blocks in enumerate(BIREAL_BLOCKS[depth]):
        out_channels = width * 2**index
        units = []
        for unit in range(2 * blocks):
            stride = 2 if index > 0 and unit == 0 else 1
            units.append(BinaryConvUnit(in_channels, out_channels, stride=stride))
            in_channels = out_channels
        stages.append(nn.Sequential(*units))
    return StagedNet(
        stem(width, dataset),
        nn.Sequential(*stages),
        ClassifierHead(in_channels, dataset.num_classes),
    )
