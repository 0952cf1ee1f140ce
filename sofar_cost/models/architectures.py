"""The numbers that define each architecture family, kept free of torch.

The registry needs them to name, validate and list presets (``sofar-cost list`` must not pay
for importing torch); the builders in :mod:`.bireal`, :mod:`.densenet` and
:mod:`.fractal_resnet` read the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """Input setting: image size, classes and which stem the papers use for it."""

    name: str
    image_size: int
    num_classes: int
    imagenet_stem: bool


DATASETS: dict[str, DatasetSpec] = {
    "imagenet": DatasetSpec("imagenet", 224, 1000, imagenet_stem=True),
    "cifar100": DatasetSpec("cifar100", 32, 100, imagenet_stem=False),
}

# Bi-Real ResNet: basic blocks per stage.
BIREAL_BLOCKS: dict[int, tuple[int, ...]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

# BinaryDenseNet paper, Table 7: layers per stage and the reduction rate of each transition.
BDN_CONFIGS: dict[int, tuple[tuple[int, ...], tuple[float, ...]]] = {
    28: ((6, 6, 6, 5), (2.7, 2.7, 2.2)),
    37: ((6, 8, 12, 6), (3.3, 3.3, 4.0)),
    45: ((6, 12, 14, 8), (2.7, 3.3, 4.0)),
}
# SoFAR counts every conv as a layer, so BinaryDenseNet28/37 become 51/69.
SOFAR_BDN_DEPTH = {51: 28, 69: 37}

# Fractal ResNets at the budget of Bi-Real ResNet18 / ResNet34: fractal blocks per stage.
RESNET18_BUDGET_STAGES = (1, 1, 1, 1)
# Nine blocks split (2, 2, 3, 2): the only split whose costs fit SoFAR's ResNet34-budget rows.
RESNET34_BUDGET_STAGES = (2, 2, 3, 2)

# Most columns C a fractal block of each family may have (the papers' range).
MAX_FRACTAL_COLUMNS = {"rf": 6, "f": 6, "drf": 4, "df": 4}


def fractal_depth(columns: int, stage_units: tuple[int, ...]) -> int:
    """The papers' depth: every conv on the longest path (``2**(C-1)`` per block or dense
    layer), plus the stem, one transition between stages and the classifier."""
    return 1 + sum(stage_units) * 2 ** (columns - 1) + (len(stage_units) - 1) + 1


def dense_depth(columns: int, stage_layers: tuple[int, ...]) -> int:
    """SoFAR's depth of a fractal DenseNet: the same count as :func:`fractal_depth`."""
    return fractal_depth(columns, stage_layers)
