"""Building blocks shared by every model family: stems, binary units, joins, transitions, heads.

Which layers are binary follows the papers: the first conv, the downsampling/transition 1x1
convs and the classifier stay full precision; the 3x3 convs inside blocks are binary.
"""

from __future__ import annotations

import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d
from sofar_cost.errors import SofarError

# re-exported for existing imports; their home is the torch-free .architectures
from sofar_cost.models.architectures import DATASETS as DATASETS
from sofar_cost.models.architectures import DatasetSpec


def stem(out_channels: int, dataset: DatasetSpec) -> nn.Sequential:
    """ImageNet: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (224 -> 56). CIFAR: 3x3/1 conv, BN (32 -> 32).

    The CIFAR stem is inferred from SoFAR Table 2: only a 3x3 stride-1 conv without max-pool
    (stages at 32/16/8/4) reproduces Bi-Real ResNet18's printed costs (docs/counting.md).
    """
    if dataset.imagenet_stem:
        return nn.Sequential(
            nn.Conv2d(3, out_channels, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    return nn.Sequential(
        nn.Conv2d(3, out_channels, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BinaryConvUnit(nn.Module):
    """sign -> binary 3x3 conv -> BN, with an optional identity shortcut (Bi-Real's unit, eq. 7).

    With ``stride`` 2 the shortcut is Bi-Real's downsampling: AvgPool(2) -> FP 1x1 conv -> BN.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        residual: bool = True,
        scale_weights: bool = True,
    ) -> None:
        super().__init__()
        self.conv = BinaryConv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, scale_weights=scale_weights
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module | None = None
        if residual:
            needs_projection = stride != 1 or in_channels != out_channels
            self.shortcut = (
                downsample(in_channels, out_channels, stride) if needs_projection else nn.Identity()
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


def imagenet_only(name: str, dataset: DatasetSpec) -> None:
    """The larq-zoo presets are defined for ImageNet only (224x224, 1000 classes)."""
    if dataset.name != "imagenet":
        raise SofarError(
            f"{name} is defined for ImageNet only (224x224, 1000 classes), "
            f"not {dataset.name}; use --dataset imagenet"
        )


def downsample(in_channels: int, out_channels: int, stride: int = 2) -> nn.Sequential:
    """AvgPool -> full-precision 1x1 conv -> BN: Bi-Real's shortcut and the RF transition."""
    layers: list[nn.Module] = []
    if stride != 1:
        layers.append(nn.AvgPool2d(stride))
    layers += [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers)


class Join(nn.Module):
    """FractalNet's join: the element-wise mean of its inputs."""

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if len(inputs) == 1:
            return inputs[0]
        return torch.stack(inputs).mean(dim=0)


class ClassifierHead(nn.Module):
    """Global average pool -> full-precision linear classifier."""

    def __init__(self, in_features: int, num_classes: int, pre: nn.Module | None = None) -> None:
        super().__init__()
        self.pre = pre if pre is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.pre(x)), 1))


class StagedNet(nn.Module):
    """stem -> stages (with transitions between) -> head: the common skeleton of every family."""

    def __init__(self, stem_module: nn.Module, stages: nn.Sequential, head: ClassifierHead) -> None:
        super().__init__()
        self.stem = stem_module
        self.stages = stages
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
