"""Model registry in the style of timm: ``create_model(name, dataset=..., width=...)``.

Every model row of the papers has a preset whose default width is the one the paper uses for
that dataset. Beyond the presets, any fractal configuration can be named by the papers' own
notation: ``rf-c6d32-133`` (or ``f-``, ``drf-``, ``df-``), with ``width`` given explicitly.

The preset table (:data:`PRESET_TABLE`, one entry per preset) names each builder by module
path (:class:`LazyBuilder`), so listing, resolving and validating names imports no torch; the
builder's module is imported on the first build.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sofar_cost.errors import SofarError, unknown_name_error
from sofar_cost.models.architectures import (
    BDN_CONFIGS,
    DATASETS,
    MAX_FRACTAL_COLUMNS,
    RESNET18_BUDGET_STAGES,
    RESNET34_BUDGET_STAGES,
    SOFAR_BDN_DEPTH,
    DatasetSpec,
    dense_depth,
    fractal_depth,
)
from sofar_cost.results import PresetList

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[[int, DatasetSpec], "nn.Module"]

MAX_WIDTH = 4096
FRACTAL_FAMILIES = tuple(MAX_FRACTAL_COLUMNS)


@dataclass(frozen=True)
class LazyBuilder:
    """``target(*args, width, dataset, **kwargs)``, the target named ``"module:function"`` and
    imported only when a model is built."""

    target: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, width: int, dataset: DatasetSpec) -> nn.Module:
        module, function = self.target.split(":")
        build = getattr(importlib.import_module(module), function)
        return build(*self.args, width, dataset, **dict(self.kwargs))


def lazy(target: str, *args: Any, **kwargs: Any) -> LazyBuilder:
    """A :class:`LazyBuilder`; ``target`` is relative to ``sofar_cost.models`` unless dotted."""
    module = target if "." in target.split(":")[0] else f"sofar_cost.models.{target}"
    return LazyBuilder(module, args, tuple(sorted(kwargs.items())))


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

    def has_default_width(self, dataset: str) -> bool:
        return dataset in self.widths

    def default_width(self, dataset: str) -> int:
        if dataset not in self.widths:
            raise MissingWidthError(
                f"model {self.name!r} has no default width for {dataset}; give a width "
                "(--width N on the command line, width = N in a config)"
            )
        return self.widths[dataset]


class MissingWidthError(SofarError):
    """A model named without a width that has no default for the dataset."""


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
        kind = "ResNet"
    else:
        layouts = {
            dense_depth(columns, BDN_CONFIGS[SOFAR_BDN_DEPTH[f]][0]): (f, f"bdn{f}")
            for f in SOFAR_BDN_DEPTH
        }
        kind = "DenseNet"
    if depth not in layouts:
        raise SofarError(
            f"no {family.upper()}-c{columns} {kind} has depth {depth}; valid depths: "
            + ", ".join(str(d) for d in sorted(layouts))
        )
    layout, baseline = layouts[depth]
    if kind == "ResNet":
        build = lazy("fractal_resnet:fractal_resnet", columns, stage_blocks=layout,
                     residual=residual)  # fmt: skip
    else:
        build = lazy("densenet:drf_densenet", columns, layout, residual=residual)
    paper = f"{family.upper()}-c{columns}d{2 ** (columns - 1)} {kind}{depth}"
    return ModelSpec(name, family, build, widths or {}, baseline, paper, note, columns)


def _widths(imagenet: int, cifar100: int) -> dict[str, int]:
    return {"imagenet": imagenet, "cifar100": cifar100}


# One entry per preset. Fractal widths are those printed in SoFAR Tables 1-3; a width the
# paper does not print is the largest width whose Params stay within the baseline's (the
# paper's own rule, see docs/counting.md); tests check these against the solver. Ablations
# reuse their counterpart's widths.
BDN_NOTE = "growth 64 as in the BinaryDenseNet paper (Table 7), also on CIFAR-100"
SOLVED_NOTE = "ImageNet width {} solved (no ImageNet row in the paper)"
ABLATION_NOTE = "widths of {} (Table 3 is CIFAR-100 only)"
PRESET_TABLE: list[ModelSpec] = [
    ModelSpec("bireal18", "bireal", lazy("bireal:bireal_resnet", 18), _widths(64, 64), None,
              "Bi-Real ResNet18"),
    ModelSpec("bireal34", "bireal", lazy("bireal:bireal_resnet", 34), _widths(64, 64), None,
              "Bi-Real ResNet34"),
    ModelSpec("binarydensenet28", "binarydensenet", lazy("densenet:binary_densenet", 28),
              _widths(64, 64), None, "BinaryDenseNet28", BDN_NOTE),
    ModelSpec("binarydensenet37", "binarydensenet", lazy("densenet:binary_densenet", 37),
              _widths(64, 64), None, "BinaryDenseNet37", BDN_NOTE),
    ModelSpec("binarydensenet45", "binarydensenet", lazy("densenet:binary_densenet", 45),
              _widths(64, 64), None, "BinaryDenseNet45", BDN_NOTE),
    ModelSpec("bdn51", "bdn", lazy("densenet:sofar_binary_densenet", 51), _widths(32, 32), None,
              "BinaryDenseNet51(32)"),
    ModelSpec("bdn69", "bdn", lazy("densenet:sofar_binary_densenet", 69), _widths(32, 32), None,
              "BinaryDenseNet69(32)"),
    _fractal_spec("rf", 3, 21, _widths(53, 50)),
    _fractal_spec("rf", 4, 37, _widths(41, 36)),
    _fractal_spec("rf", 5, 69, _widths(31, 26)),
    _fractal_spec("rf", 3, 41, _widths(48, 45)),
    _fractal_spec("rf", 4, 77, _widths(35, 32)),
    _fractal_spec("rf", 5, 149, _widths(26, 22), SOLVED_NOTE.format(26)),
    _fractal_spec("drf", 2, 51, _widths(53, 48)),
    _fractal_spec("drf", 2, 69, _widths(48, 44)),
    _fractal_spec("drf", 3, 97, _widths(52, 38), SOLVED_NOTE.format(52)),
    _fractal_spec("drf", 3, 133, _widths(50, 36), SOLVED_NOTE.format(50)),
    _fractal_spec("f", 3, 21, _widths(53, 50), ABLATION_NOTE.format("RF-c3d4 ResNet21")),
    _fractal_spec("f", 3, 41, _widths(48, 45), ABLATION_NOTE.format("RF-c3d4 ResNet41")),
    _fractal_spec("df", 2, 51, _widths(53, 48), ABLATION_NOTE.format("DRF-c2d2 DenseNet51")),
    _fractal_spec("df", 2, 69, _widths(48, 44), ABLATION_NOTE.format("DRF-c2d2 DenseNet69")),
]  # fmt: skip
# larq-zoo 2.4.0 models (ImageNet only). The width is the model's natural base width (first
# conv / stage width, growth rate): the default reproduces larq-zoo exactly, other widths scale
# the channels.
LARQ_ZOO_NOTE = "larq-zoo 2.4.0 architecture (ImageNet only); width = base width"
PRESET_TABLE += [
    ModelSpec(name, "larq-zoo", builder, {"imagenet": width}, None, paper, LARQ_ZOO_NOTE)
    for name, builder, width, paper in (
        ("binary-alexnet", lazy("alexnet:binary_alexnet"), 64, "BinaryAlexNet"),
        ("xnornet", lazy("alexnet:xnornet"), 96, "XNORNet"),
        ("binary-resnet-e18", lazy("bireal:binary_resnet_e"), 64, "BinaryResNetE18"),
        ("real-to-binary-net", lazy("real_to_binary:real_to_binary_net"), 64, "RealToBinaryNet"),
        ("binarydensenet37-dilated", lazy("densenet:binary_densenet37_dilated"), 64,
         "BinaryDenseNet37Dilated"),
        ("meliusnet22", lazy("meliusnet:meliusnet22"), 64, "MeliusNet22"),
        ("quicknet-small", lazy("quicknet:quicknet", "quicknet-small"), 32, "QuickNetSmall"),
        ("quicknet", lazy("quicknet:quicknet", "quicknet"), 64, "QuickNet"),
        ("quicknet-large", lazy("quicknet:quicknet", "quicknet-large"), 64, "QuickNetLarge"),
    )
]  # fmt: skip
PRESETS: dict[str, ModelSpec] = {spec.name: spec for spec in PRESET_TABLE}
ALIASES: dict[str, str] = {
    "rf-c3d4": "rf-c3d4-21",
    "rf-c4d8": "rf-c4d8-37",
    "rf-c5d16": "rf-c5d16-69",
    "drf-c2d2": "drf-c2d2-51",
}
_FRACTAL_NAME = re.compile(r"^(rf|f|drf|df)-c(\d+)d(\d+)-(\d+)$")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that reads digit runs as numbers: ``rf-c5d16-69`` before ``rf-c5d16-149``."""
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in re.split(r"(\d+)", name) if p)


def list_models(pattern: str = "*") -> list[str]:
    """Preset names matching a shell-style wildcard, e.g. ``list_models("rf-*")``, in natural
    order."""
    return sorted((n for n in PRESETS if fnmatch.fnmatch(n, pattern)), key=natural_key)


def preset_list(pattern: str = "*") -> PresetList:
    """``sofar-cost list``: the presets matching ``pattern`` with their metadata."""
    aliases = {target: alias for alias, target in ALIASES.items()}
    rows = [
        {
            "model": name,
            "alias": aliases.get(name, ""),
            "paper_name": PRESETS[name].paper_name,
            "imagenet_width": PRESETS[name].widths.get("imagenet"),
            "cifar100_width": PRESETS[name].widths.get("cifar100"),
            "baseline": PRESETS[name].baseline or "",
        }
        for name in list_models(pattern)
    ]
    if not rows:
        raise SofarError(f"no model matches {pattern!r}; try 'sofar-cost list' for all")
    return PresetList(rows)


def resolve(name: str) -> ModelSpec:
    """The spec for a preset, alias or fractal name; a one-line error for anything else."""
    if not isinstance(name, str):
        raise SofarError(f"a model name must be a string, got {name!r}")
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


def fractal_name(family: str, columns: int, depth: int) -> str:
    """The papers' notation, e.g. ``fractal_name("rf", 4, 37) == "rf-c4d8-37"``."""
    return f"{family}-c{columns}d{2 ** (columns - 1)}-{depth}"


def column_variant(spec: ModelSpec, columns: int) -> ModelSpec:
    """The same fractal family and budget layout (ResNet18/34, DenseNet51/69) with C columns."""
    if spec.columns is None or spec.baseline is None:
        raise SofarError(f"--columns needs a fractal model (rf-, f-, drf-, df-), got {spec.name!r}")
    if spec.family in ("rf", "f"):
        stages = RESNET18_BUDGET_STAGES if spec.baseline == "bireal18" else RESNET34_BUDGET_STAGES
        depth = fractal_depth(columns, stages)
    else:
        depth = dense_depth(columns, BDN_CONFIGS[SOFAR_BDN_DEPTH[int(spec.baseline[3:])]][0])
    return resolve(fractal_name(spec.family, columns, depth))


def check_dataset(dataset: str) -> DatasetSpec:
    if dataset not in DATASETS:
        raise unknown_name_error("dataset", dataset, DATASETS)
    return DATASETS[dataset]


def check_width(width: int) -> int:
    if not isinstance(width, int) or isinstance(width, bool) or not 1 <= width <= MAX_WIDTH:
        raise SofarError(f"width must be an integer in 1..{MAX_WIDTH}, got {width!r}")
    return width


def model_width(spec: ModelSpec, dataset: str, width: int | None = None) -> int:
    """``width`` (checked) or the spec's default for the dataset."""
    return check_width(spec.default_width(dataset) if width is None else width)


def create_model(name: str, dataset: str = "imagenet", width: int | None = None) -> nn.Module:
    """Build a preset, alias or fractal name for a dataset, at the paper's width unless given.

    Args:
        name: a preset (``sofar-cost list``), an alias such as ``rf-c4d8``, or a fractal name
            in the papers' notation, e.g. ``rf-c6d32-133``.
        dataset: ``imagenet`` or ``cifar100``; picks the stem, input size and classes.
        width: base width (growth rate for DenseNets), 1..4096; the paper's width if None.

    Returns:
        A ``torch.nn.Module`` carrying ``sofar_name``, ``sofar_width`` and ``sofar_dataset``.
        Build under ``with torch.device("meta"):`` to skip allocating weights.

    Raises:
        SofarError: unknown name or dataset, a width outside 1..4096, or no width given for a
            model without a default width on that dataset.

    Example:
        >>> from sofar_cost import create_model
        >>> model = create_model("rf-c4d8", dataset="cifar100")
        >>> model.sofar_width
        36
    """
    spec = resolve(name)
    data = check_dataset(dataset)
    width = model_width(spec, dataset, width)
    model = spec.build(width, data)
    model.sofar_name = spec.name
    model.sofar_width = width
    model.sofar_dataset = dataset
    return model
