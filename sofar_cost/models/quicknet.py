"""QuickNet, QuickNetSmall and QuickNetLarge (Bannink et al. 2021), from ``larq_zoo.sota``.

Four sections of residual blocks: binary 3x3 conv (plain sign(W), larq's ``SteSign``; its
input padded with +1, larq's ``pad_values=1.0``) -> ReLU -> BN, + x. Between sections a
full-precision transition: ReLU, 2x2 max-pool with stride 1, a fixed 3x3 blur (anti-aliased
downsampling, stride 2, depthwise, not trained) and a 1x1 conv with BN. The stem and the
classifier are full precision (larq-zoo writes them as quantized layers without quantizers).
"""

from __future__ import annotations

import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d
from sofar_cost.models.layers import ClassifierHead, DatasetSpec, StagedNet, imagenet_only

# name -> (blocks per section, section widths at the preset's base width)
QUICKNET_CONFIGS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "quicknet-small": ((4, 4, 4, 4), (32, 64, 256, 512)),
    "quicknet": ((4, 4, 4, 4), (64, 128, 256, 512)),
    "quicknet-large": ((6, 8, 12, 6), (64, 128, 256, 512)),
}


class QuickNetBlock(nn.Module):
    """``bn(relu(conv(sign(pad(x, +1))))) + x`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = nn.ConstantPad2d(1, 1.0)  # sign(+1) = +1: padding the sign with +1
        self.conv = BinaryConv2d(channels, channels, 3, scale_weights=False)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.relu(self.conv(self.pad(x)))) + x


def blur_kernel(channels: int) -> torch.Tensor:
    """The fixed depthwise [1, 2, 1]^T [1, 2, 1] / 16 kernel of larq-zoo's blurpool."""
    taps = torch.tensor([1.0, 2.0, 1.0])
    return (torch.outer(taps, taps) / 16).expand(channels, 1, 3, 3).clone()


class BlurPool(nn.Conv2d):
    """Depthwise 3x3 blur with stride 2; its weights are parameters that are never trained
    (larq counts them, as ``trainable=False`` weights)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.weight.copy_(blur_kernel(channels))
        self.weight.requires_grad_(False)


def transition(in_channels: int, out_channels: int) -> nn.Sequential:
    """ReLU -> MaxPool(2, stride 1) -> blur /2 -> FP 1x1 conv -> BN (56 -> 55 -> 28)."""
    return nn.Sequential(
        nn.ReLU(),
        nn.MaxPool2d(2, stride=1),
        BlurPool(in_channels),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels, eps=1e-5),
    )


def quicknet_stem(channels: int) -> nn.Sequential:
    """3x3/2 conv 3 -> C/4, BN, ReLU; depthwise 3x3/2, BN; 1x1 conv -> C, BN (224 -> 56)."""
    quarter = max(channels // 4, 1)
    return nn.Sequential(
        nn.Conv2d(3, quarter, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(quarter),
        nn.ReLU(),
        nn.Conv2d(quarter, quarter, 3, stride=2, padding=1, groups=quarter, bias=False),
        nn.BatchNorm2d(quarter, affine=False),  # larq: scale=False, center=False
        nn.Conv2d(quarter, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
    )


def quicknet(name: str, width: int, dataset: DatasetSpec) -> StagedNet:
    """A QuickNet preset; ``width`` scales every section (the first section has ``width``)."""
    imagenet_only(name, dataset)
    blocks, widths = QUICKNET_CONFIGS[name]
    widths = tuple(w * width // widths[0] for w in widths)
    stages: list[nn.Module] = []
    channels = widths[0]
    for count, section_width in zip(blocks, widths, strict=True):
        modules: list[nn.Module] = []
        if section_width != channels:
            modules.append(transition(channels, section_width))
            channels = section_width
        modules += [QuickNetBlock(channels) for _ in range(count)]
        stages.append(nn.Sequential(*modules))
    head = ClassifierHead(channels, dataset.num_classes, pre=nn.ReLU())
    return StagedNet(quicknet_stem(widths[0]), nn.Sequential(*stages), head)
