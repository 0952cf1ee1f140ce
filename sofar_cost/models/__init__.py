"""Model zoo: Bi-Real ResNet, BinaryDenseNet, RF/F fractal ResNets, DRF/DF fractal DenseNets.

Importing this package (and the registry) needs no torch; building a model does.
"""

from sofar_cost.models.architectures import DATASETS, DatasetSpec
from sofar_cost.models.registry import (
    ALIASES,
    PRESETS,
    ModelSpec,
    create_model,
    list_models,
    resolve,
)

__all__ = [
    "ALIASES",
    "DATASETS",
    "PRESETS",
    "DatasetSpec",
    "ModelSpec",
    "create_model",
    "list_models",
    "resolve",
]
