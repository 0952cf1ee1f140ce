"""Binary DenseNets: BinaryDenseNet (Bethge et al.) and larq-zoo's BinaryDenseNet37Dilated,
SoFAR's split BinaryDenseNet51/69, and DRF-cCdD / DF-cCdD DenseNet (eq. 12-15).

All share one skeleton: a 64-channel stem, stages of blocks that each concatenate new
feature maps to their input, and full-precision transitions MaxPool(2) -> ReLU -> 1x1 conv
(BinaryDenseNet's reordered transition, which works at the pooled resolution). The dilated
variant skips the max-pool before its dilated stages and keeps their resolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sofar_cost.binary import BinaryConv2d
from sofar_cost.models.architectures import BDN_CONFIGS, SOFAR_BDN_DEPTH
from sofar_cost.models.architectures import dense_depth as dense_depth
from sofar_cost.models.fractal_resnet import FractalBlock
from sofar_cost.models.layers import (
    BinaryConvUnit,
    ClassifierHead,
    DatasetSpec,
    Join,
    StagedNet,
    imagenet_only,
    stem,
)

STEM_WIDTH = 64

DILATED_BDN37 = (1, 1, 2, 4)  # larq-zoo's BinaryDenseNet37Dilated, per stage

TransitionRule = Callable[[int, float], int]


def bethge_transition_width(channels: int, reduction: float) -> int:
    """The official BinaryDenseNet code (BMXNet-v2, larq-zoo): multiples of 32."""
    return round((channels // reduction) / 32) * 32


def sofar_transition_width(channels: int, reduction: float) -> int:
    """SoFAR's counts imply plain rounding: 448 / 2.7 -> 166, 550 / 2.7 -> 204, ..."""
    return round(channels / reduction)


class DenseLayer(nn.Module):
    """BN -> sign -> binary 3x3 conv (C -> growth), concatenated to the input."""

    def __init__(
        self, in_channels: int, growth: int, dilation: int = 1, scale_weights: bool = True
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = BinaryConv2d(
            in_channels,
            growth,
            3,
            padding=dilation,
            dilation=dilation,
            scale_weights=scale_weights,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bn(x))], dim=1)


class SplitDenseBlock(nn.Module):
    """SoFAR's BinaryDenseNet51/69 block: one growth-64 layer split into growth-32 convs.

    SoFAR's Params and Flops for both datasets show 9*32*(2*C_in + 64) binary weights per
    block, 9*32*32 more than the plain split (C_in -> 32, then C_in + 32 -> 32). We place the
    extra weights in a 32 -> 32 binary conv refining the first half before the second conv
    sees it; any layout with these weights at this resolution counts the same.
    """

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        half = growth // 2
        self.first = DenseLayer(in_channels, half)
        self.refine = BinaryConvUnit(half, half, residual=False)
        self.second = DenseLayer(in_channels + half, half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.first(x)
        half = first.shape[1] - x.shape[1]
        refined = torch.cat([x, self.refine(first[:, -half:])], dim=1)
        return self.second(refined)


class DenseFractal(nn.Module):
    """F^D_C (eq. 12-14): F^D_1 = Conv; F^D_{C+1}(I) = join(F^R_C(F^D_C(I)), Conv(I)).

    The convs that keep their channel count (growth -> growth, inside F^R_C) carry residual
    shortcuts; the ones that read the block input (C_in -> growth) cannot. Neighbouring joins
    collapse into one, as in the residual fractal block.
    """

    def __init__(self, columns: int, in_channels: int, growth: int, residual: bool) -> None:
        super().__init__()
        self.column = BinaryConvUnit(in_channels, growth, residual=False)
        self.dense = (
            DenseFractal(columns - 1, in_channels, growth, residual) if columns > 1 else None
        )
        self.fractal = FractalBlock(columns - 1, growth, residual) if columns > 1 else None
        self.join = Join()

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.dense is None or self.fractal is None:
            return [self.column(x)]
        return [*self.fractal.branches(self.dense(x)), self.column(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(self.branches(x))


class DenseFractalBlock(nn.Module):
    """Eq. 15: O = concat(I, F^D_C(I))."""

    def __init__(self, columns: int, in_channels: int, growth: int, residual: bool = True) -> None:
        super().__init__()
        self.fractal = DenseFractal(columns, in_channels, growth, residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.fractal(x)], dim=1)


class Transition(nn.Sequential):
    """BN -> MaxPool(2) -> ReLU -> full-precision 1x1 conv (``pool=False``: no max-pool)."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            *([nn.MaxPool2d(2)] if pool else []),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )


BlockFactory = Callable[[int, int], nn.Module]  # (in_channels, dilation) -> block


def dense_net(
    stage_layers: tuple[int, ...],
    reductions: tuple[float, ...],
    make_block: BlockFactory,
    growth: int,
    transition_width: TransitionRule,
    dataset: DatasetSpec,
    dilations: tuple[int, ...] | None = None,
) -> StagedNet:
    """The shared DenseNet skeleton; ``make_block(in_channels, dilation)`` adds ``growth``
    channels. A stage with dilation > 1 keeps the resolution: its transition has no pool."""
    dilations = dilations or (1,) * len(stage_layers)
    stages: list[nn.Module] = []
    channels = STEM_WIDTH
    for index, layers in enumerate(stage_layers):
        modules: list[nn.Module] = []
        if index > 0:
            reduced = transition_width(channels, reductions[index - 1])
            modules.append(Transition(channels, reduced, pool=dilations[index] == 1))
            channels = reduced
        for _ in range(layers):
            modules.append(make_block(channels, dilations[index]))
            channels += growth
        stages.append(nn.Sequential(*modules))
    head = ClassifierHead(
        channels, dataset.num_classes, pre=nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
    )
    return StagedNet(stem(STEM_WIDTH, dataset), nn.Sequential(*stages), head)


def binary_densenet(depth: int, growth: int, dataset: DatasetSpec) -> StagedNet:
    """BinaryDenseNet28/37/45 as in its paper and official code."""
    layers, reductions = BDN_CONFIGS[depth]
    return dense_net(
        layers,
        reductions,
        lambda c, _: DenseLayer(c, growth),
        growth,
        bethge_transition_width,
        dataset,
    )


def binary_densenet37_dilated(growth: int, dataset: DatasetSpec) -> StagedNet:
    """larq-zoo's BinaryDenseNet37Dilated: BinaryDenseNet37 whose last two stages use
    dilation 2 and 4 instead of pooling (28x28 maps), and plain sign(W) weights (larq's
    ``SteSign``)."""
    imagenet_only("binarydensenet37-dilated", dataset)
    layers, reductions = BDN_CONFIGS[37]
    return dense_net(
        layers,
        reductions,
        lambda c, d: DenseLayer(c, growth, dilation=d, scale_weights=False),
        growth,
        bethge_transition_width,
        dataset,
        dilations=DILATED_BDN37,
    )


def sofar_binary_densenet(depth: int, growth: int, dataset: DatasetSpec) -> StagedNet:
    """SoFAR's BinaryDenseNet51(32)/69(32): BinaryDenseNet28/37 with split layers.

    ``growth`` is the split width (32): each block adds 2 * growth channels.
    """
    layers, reductions = BDN_CONFIGS[SOFAR_BDN_DEPTH[depth]]
    return dense_net(
        layers,
        reductions,
        lambda c, _: SplitDenseBlock(c, 2 * growth),
        2 * growth,
        sofar_transition_width,
        dataset,
    )


def drf_densenet(
    columns: int, depth_family: int, growth: int, dataset: DatasetSpec, residual: bool = True
) -> StagedNet:
    """DRF-cCdD DenseNet (DF- without residuals) on the stage layout of BinaryDenseNet51/69."""
    layers, reductions = BDN_CONFIGS[SOFAR_BDN_DEPTH[depth_family]]
    return dense_net(
        layers,
        reductions,
        lambda c, _: DenseFractalBlock(columns, c, growth, residual),
        growth,
        sofar_transition_width,
        dataset,
    )
