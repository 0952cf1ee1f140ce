"""Model registry in the style of timm: ``create_model(name, dataset=..., width=...)``.

Every model row of the papers has a preset whose default width is the one the paper uses for
that dataset. Beyond the presets, any fractal configuration can be named by the papers' own
notation: ``rf-c6d32-133`` (or ``f-``, ``drf-``, ``df-``), with ``width`` given explicitly.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from torch import nn

from sofar_cost.errors import SofarError, unknown_name_error
from sofar_cost.models.alexnet import binary_alexnet, xnornet
from sofar_cost.models.bireal import binary_resnet_e, bireal_resnet
from sofar_cost.models.densenet import (
    BDN_CONFIGS,
    SOFAR_BDN_DEPTH,
    binary_densenet,
    binary_densenet37_dilated,
    dense_depth,
    drf_densenet,
    sofar_binary_densenet,
)
from sofar_cost.models.fractal_resnet import (
    RESNET18_BUDGET_STAGES,
    RESNET34_BUDGET_STAGES,
    fractal_depth,
    fractal_resnet,
)
from sofar_cost.models.layers import DATASETS, DatasetSpec
from sofar_cost.models.meliusnet import meliusnet22
from sofar_cost.models.quicknet import QUICKNET_CONFIGS, quicknet
from sofar_cost.models.real_to_binary import real_to_binary_net

Builder = Callable[[int, DatasetSpec], nn.Module]

MAX_FRACTAL_COLUMNS = {"rf": 6, "f": 6, "drf": 4, "df": 4}
MAX_WIDTH = 4096


@dataclass(frozen=True)
class ModelSpec:
    """A buildable model: family, how to build it at a width, and the paper's widths."""

    name: str
    family: str
    build: Builder
    widths: dict[str, int] = field(default_factory=dict)
    baseline: str | None = None
    paper_name: str = ""
    width_note: str = ""
    columns: int | None = None

    def default_width(self, dataset: str) -> int:
        if dataset not in self.widths:
            raise SofarError(
                f"model {self.name!r} has no default width for {dataset}; pass --width N"
            )
        return self.widths[dataset]


def _fractal_spec(
    family: str, columns: int, depth: int, widths: dict[str, int] | None = None, note: str = ""
) -> ModelSpec:
    """Spec for ``{family}-c{C}d{D}-{depth}``; the depth picks the ResNet18/34 budget layout."""
    residual = family in ("rf", "drf")
    name = f"{family}-c{columns}d{2 ** (columns - 1)}-{depth}"
    if family in ("rf", "f"):
        layouts = {
            fractal_depth(columns, RESNET18_BUDGET_STAGES): (RESNET18_BUDGET_STAGES, "bireal18"),
            fractal_depth(columns, RESNET34_BUDGET_STAGES): (RESNET34_BUDGET_STAGES, "bireal34"),
        }
        if depth not in layouts:
            raise SofarError(
                f"no {family.upper()}-c{columns} ResNet has depth {depth}; valid depths: "
                + ", ".join(str(d) for d in sorted(layouts))
            )
        stages, baseline = layouts[depth]

        def build(width: int, dataset: DatasetSpec) -> nn.Module:
            return fractal_resnet(columns, width, dataset, stages, residual=residual)

        paper = f"{family.upper()}-c{columns}d{2 ** (columns - 1)} ResNet{depth}"
    else:
        families = {
            dense_depth(columns, BDN_CONFIGS[SOFAR_BDN_DEPTH[f]][0]): f for f in SOFAR_BDN_DEPTH
        }
        if depth not in families:
            raise SofarError(
                f"no {family.upper()}-c{columns} DenseNet has depth {depth}; valid depths: "
                + ", ".join(str(d) for d in sorted(families))
            )
        stage_family = families[depth]
        baseline = f"bdn{stage_family}"

        def build(width: int, dataset: DatasetSpec) -> nn.Module:
            return drf_densenet(columns, stage_family, width, dataset, residual=residual)

        paper = f"{family.upper()}-c{columns}d{2 ** (columns - 1)} DenseNet{depth}"
    return ModelSpec(name, family, build, widths or {}, baseline, paper, note, columns)


def _presets() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec(
            f"bireal{d}",
            "bireal",
            lambda w, ds, d=d: bireal_resnet(d, w, ds),
            {"imagenet": 64, "cifar100": 64},
            None,
            f"Bi-Real ResNet{d}",
        )
        for d in (18, 34)
    ]
    specs += [
        ModelSpec(
            f"binarydensenet{d}",
            "binarydensenet",
            lambda w, ds, d=d: binary_densenet(d, w, ds),
            {"imagenet": 64, "cifar100": 64},
            None,
            f"BinaryDenseNet{d}",
            "growth 64 as in the BinaryDenseNet paper (Table 7), also on CIFAR-100",
        )
        for d in BDN_CONFIGS
    ]
    specs += [
        ModelSpec(
            f"bdn{d}",
            "bdn",
            lambda w, ds, d=d: sofar_binary_densenet(d, w, ds),
            {"imagenet": 32, "cifar100": 32},
            None,
            f"BinaryDenseNet{d}(32)",
        )
        for d in SOFAR_BDN_DEPTH
    ]
    # Widths printed in SoFAR Tables 1-3. A width the paper does not print is the largest
    # width whose Params stay within the baseline's (the paper's own rule, see docs/counting.md);
    # tests check these against the solver. Ablations reuse their counterpart's widths.
    fractal = [
        ("rf", 3, 21, 53, 50, ""),
        ("rf", 4, 37, 41, 36, ""),
        ("rf", 5, 69, 31, 26, ""),
        ("rf", 3, 41, 48, 45, ""),
        ("rf", 4, 77, 35, 32, ""),
        ("rf", 5, 149, 26, 22, "ImageNet width 26 solved (no ImageNet row in the paper)"),
        ("drf", 2, 51, 53, 48, ""),
        ("drf", 2, 69, 48, 44, ""),
        ("drf", 3, 97, 52, 38, "ImageNet width 52 solved (no ImageNet row in the paper)"),
        ("drf", 3, 133, 50, 36, "ImageNet width 50 solved (no ImageNet row in the paper)"),
        ("f", 3, 21, 53, 50, "widths of RF-c3d4 ResNet21 (Table 3 is CIFAR-100 only)"),
        ("f", 3, 41, 48, 45, "widths of RF-c3d4 ResNet41 (Table 3 is CIFAR-100 only)"),
        ("df", 2, 51, 53, 48, "widths of DRF-c2d2 DenseNet51 (Table 3 is CIFAR-100 only)"),
        ("df", 2, 69, 48, 44, "widths of DRF-c2d2 DenseNet69 (Table 3 is CIFAR-100 only)"),
    ]
    specs += [
        _fractal_spec(fam, c, depth, {"imagenet": w_in, "cifar100": w_c}, note)
        for fam, c, depth, w_in, w_c, note in fractal
    ]
    specs += _larq_zoo_presets()
    return {spec.name: spec for spec in specs}


# larq-zoo 2.4.0 models (ImageNet only): name -> (builder, base width, larq-zoo's name).
# The base width is the model's natural width parameter (first conv / stage width, growth
# rate); the default reproduces larq-zoo exactly, other widths scale the channels.
LARQ_ZOO_MODELS: dict[str, tuple[Builder, int, str]] = {
    "binary-alexnet": (binary_alexnet, 64, "BinaryAlexNet"),
    "xnornet": (xnornet, 96, "XNORNet"),
    "binary-resnet-e18": (binary_resnet_e, 64, "BinaryResNetE18"),
    "real-to-binary-net": (real_to_binary_net, 64, "RealToBinaryNet"),
    "binarydensenet37-dilated": (binary_densenet37_dilated, 64, "BinaryDenseNet37Dilated"),
    "meliusnet22": (meliusnet22, 64, "MeliusNet22"),
    **{
        name: (partial(quicknet, name), QUICKNET_CONFIGS[name][1][0], paper)
        for name, paper in (
            ("quicknet-small", "QuickNetSmall"),
            ("quicknet", "QuickNet"),
            ("quicknet-large", "QuickNetLarge"),
        )
    },
}


def _larq_zoo_presets() -> list[ModelSpec]:
    return [
        ModelSpec(name, "larq-zoo", build, {"imagenet": width}, None, paper,
                  "larq-zoo 2.4.0 architecture (ImageNet only); width = base width")
        for name, (build, width, paper) in LARQ_ZOO_MODELS.items()
    ]  # fmt: skip


PRESETS: dict[str, ModelSpec] = _presets()
ALIASES: dict[str, str] = {
    "rf-c3d4": "rf-c3d4-21",
    "rf-c4d8": "rf-c4d8-37",
    "rf-c5d16": "rf-c5d16-69",
    "drf-c2d2": "drf-c2d2-51",
}
_FRACTAL_NAME = re.compile(r"^(rf|f|drf|df)-c(\d+)d(\d+)-(\d+)$")


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style wildcard, e.g. ``list_models("rf-*")``."""
    return sorted(n for n in PRESETS if fnmatch.fnmatch(n, pattern))


def resolve(name: str) -> ModelSpec:
    """The spec for a preset, alias or fractal name; a one-line error for anything else."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    match = _FRACTAL_NAME.match(key)
    if match is None:
        raise unknown_name_error("model", name, [*PRESETS, *ALIASES])
    family, columns, d, depth = match.group(1), *map(int, match.groups()[1:])
    max_columns = MAX_FRACTAL_COLUMNS[family]
    if not 1 <= columns <= max_columns:
        raise SofarError(f"{name!r}: columns must be 1..{max_columns} for {family}-, got {columns}")
    if d != 2 ** (columns - 1):
        raise SofarError(f"{name!r}: a {columns}-column block has depth d{2 ** (columns - 1)}")
    return _fractal_spec(family, columns, depth)


def column_variant(spec: ModelSpec, columns: int) -> ModelSpec:
    """The same fractal family and budget layout (ResNet18/34, DenseNet51/69) with C columns."""
    if spec.columns is None or spec.baseline is None:
        raise SofarError(f"--columns needs a fractal model (rf-, f-, drf-, df-), got {spec.name!r}")
    if spec.family in ("rf", "f"):
        stages = RESNET18_BUDGET_STAGES if spec.baseline == "bireal18" else RESNET34_BUDGET_STAGES
        depth = fractal_depth(columns, stages)
    else:
        depth = dense_depth(columns, BDN_CONFIGS[SOFAR_BDN_DEPTH[int(spec.baseline[3:])]][0])
    return resolve(f"{spec.family}-c{columns}d{2 ** (columns - 1)}-{depth}")


def check_dataset(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise unknown_name_error("dataset", dataset, DATASETS)
    return DATASETS[dataset]


def check_width(width: int) -> int:
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_WIDTH:
        raise SofarError(f"width must be an integer in 1..{MAX_WIDTH}, got {width!r}")
    return width


def create_model(name: str, dataset: str = "imagenet", width: int | None = None) -> nn.Module:
    """Build a preset (or fractal name) for a dataset, at the paper's width unless given."""
    spec = resolve(name)
    data = check_dataset(dataset)
    width = check_width(spec.default_width(dataset) if width is None else width)
    model = spec.build(width, data)
    model.sofar_name = spec.name
    model.sofar_width = width
    model.sofar_dataset = dataset
    return model
