"""RF-cCdD ResNet (eq. 7-8) and its ablation F-cCdD ResNet (no residual shortcuts).

A fractal block of C columns holds 2^C - 1 binary 3x3 convs of width w -> w; its longest path
is d = 2^(C-1) convs. Neighbouring joins collapse, so the block ends in one join (element-wise
mean) of C inputs. Stages have widths w, 2w, 4w, 8w, separated by full-precision transitions
(AvgPool(2) -> 1x1 conv -> BN) and the depth is N = 1 + blocks * d + 3 + 1.
"""

from __future__ import annotations

import torch
from torch import nn

from sofar_cost.models.architectures import RESNET18_BUDGET_STAGES
from sofar_cost.models.architectures import RESNET34_BUDGET_STAGES as RESNET34_BUDGET_STAGES
from sofar_cost.models.architectures import fractal_depth as fractal_depth
from sofar_cost.models.layers import (
    BinaryConvUnit,
    ClassifierHead,
    DatasetSpec,
    Join,
    StagedNet,
    downsample,
    stem,
)


class FractalBlock(nn.Module):
    """F^R_C (eq. 8): join(F_{C-1}(F_{C-1}(x)), Conv(x) + x), joins collapsed into one."""

    def __init__(self, columns: int, width: int, residual: bool = True) -> None:
        super().__init__()
        self.columns = columns
        self.column = BinaryConvUnit(width, width, residual=residual)
        self.first = FractalBlock(columns - 1, width, residual) if columns > 1 else None
        self.second = FractalBlock(columns - 1, width, residual) if columns > 1 else None
        self.join = Join()

    def branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The inputs of this block's (collapsed) join."""
        if self.first is None or self.second is None:
            return [self.column(x)]
        inner = self.first(x)
        return [*self.second.branches(inner), self.column(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.join(self.branches(x))


def fractal_resnet(
    columns: int,
    width: int,
    dataset: DatasetSpec,
    stage_blocks: tuple[int, ...] = RESNET18_BUDGET_STAGES,
    residual: bool = True,
) -> StagedNet:
    stages: list[nn.Module] = []
    for index, blocks in enumerate(stage_blocks):
        stage_width = width * 2**index
        layers: list[nn.Module] = []
        if index > 0:
            layers.append(downsample(stage_width // 2, stage_width))
        layers += [FractalBlock(columns, stage_width, residual) for _ in range(blocks)]
        stages.append(nn.Sequential(*layers))
    final_width = width * 2 ** (len(stage_blocks) - 1)
    return StagedNet(
        stem(width, dataset),
        nn.Sequential(*stages),
        ClassifierHead(final_width, dataset.num_classes),
    )
