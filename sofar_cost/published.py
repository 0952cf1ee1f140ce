"""Published results of the SoFAR, IGP and BinaryDenseNet papers, and of larq-zoo's models.

``load_published`` returns one row per model result printed in

* ``sofar``: SoFAR paper, Tables 1-4 (ImageNet / CIFAR-100),
* ``binarydensenet``: Bethge et al., BinaryDenseNet, Tables 2-6 (CIFAR-10 / ImageNet),
* ``igp``: the same SoFAR work titled "IGP", Tables 1, 3 and 4,
* ``larq-zoo``: larq-zoo 2.4.0's documentation, the "ImageNet Metrics" table of each model
  (no table number: ``table`` is empty; the model's page is cited in ``note``).

Conventions:

* ``top1_error`` / ``top5_error`` are **errors in percent**. SoFAR and IGP print errors;
  BinaryDenseNet and larq-zoo print accuracies, stored here as ``100 - accuracy`` (2 decimals).
* ``params_mbit`` is the printed parameter storage in Mbit (32 bit per float parameter,
  1 bit per binary one); ``flops`` is a plain count (``1.64 x 10^8`` -> ``1.64e8``);
  ``memory_mb`` is IGP's run-time memory in MB; ``model_size_mb`` is BinaryDenseNet's
  model size in MB (Table 6 sizes are approximate group labels, see ``note``).
* ``bits`` is the weight/activation bit-width (1 binary, 32 full precision, 2 in IGP
  Table 1); mixed settings (e.g. ternary activations) have ``bits=1`` and a ``note``.
* ``width`` is the base width / growth rate printed in parentheses (or the growth-rate
  column of BinaryDenseNet Tables 4-5).
* ``preset`` names the registry architecture; it is also set on full-precision rows
  (``bits == 32``) of the same architecture, so filter on ``bits`` for binary results.
* Footnote marks (``*``, ``**``, ``#``), citations and transcription doubts are in ``note``.
* Cells not printed are NaN (numbers and text alike).
"""

from __future__ import annotations

import math
from importlib import resources

import pandas as pd

# Numeric columns (NaN where the paper prints nothing), in file order.
FLOAT_COLUMNS = [
    "width",
    "top1_error",
    "top5_error",
    "params_mbit",
    "flops",
    "memory_mb",
    "model_size_mb",
]
COLUMNS = ["source", "table", "model_printed", "preset", "dataset", "bits", *FLOAT_COLUMNS, "note"]
SOURCES = ("sofar", "binarydensenet", "igp", "larq-zoo")
_CSV = "published_results.csv"


def load_published(source: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Published results, optionally filtered by ``source`` and ``dataset``.

    ``source`` is one of ``SOURCES``; ``dataset`` is e.g.
    ``"imagenet"``, ``"cifar100"`` or ``"cifar10"``. See the module docstring for units.
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {SOURCES}")
    path = resources.files("sofar_cost").joinpath("data", _CSV)
    with path.open("r", encoding="utf-8") as fh:
        df = pd.read_csv(
            fh,
            keep_default_na=False,
            na_values=[""],
            dtype={c: "float64" for c in FLOAT_COLUMNS} | {"table": "Int64", "bits": "int64"},
        )
    df = df[COLUMNS]
    if source is not None:
        df = df[df["source"] == source]
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    return df.reset_index(drop=True)


def published_with_costs(
    source: str | None = None,
    dataset: str | None = None,
    binary_only: bool = True,
    drop_unmatched: bool = False,
) -> pd.DataFrame:
    """Published rows beside our computed costs, so accuracy can be plotted against our counts.

    Adds ``family`` (the preset's family), ``our_width``, ``our_params_mbit`` and
    ``our_flops``. Costs are those of the binary preset, counted at the row's printed width;
    where the row prints no width (results quoted from other papers) at the preset's paper
    width. ``binarydensenet*`` presets always use their paper width (growth 64): SoFAR and IGP
    print the BinaryDenseNet paper's own models as "BinaryDenseNet51(32)" / "69(32)", a label,
    not a growth rate. Rows without a preset, on a dataset we do not model, or not binary
    (``binary_only=False``) keep NaN costs; ``drop_unmatched=True`` drops them instead.
    """
    # Imported here: the costs module pulls in torch and the model registry.
    from sofar_cost.costs import model_cost
    from sofar_cost.models.layers import DATASETS
    from sofar_cost.models.registry import resolve

    df = load_published(source, dataset)
    if binary_only:
        df = df[df["bits"] == 1]
    df = df.copy()
    families, widths, params, flops = [], [], [], []
    for row in df.itertuples():
        spec = resolve(row.preset) if isinstance(row.preset, str) else None
        family = spec.family if spec else None
        width = float("nan")
        if spec and row.bits == 1 and row.dataset in DATASETS:
            printed = row.width if family != "binarydensenet" else float("nan")
            width = int(spec.widths[row.dataset] if math.isnan(printed) else printed)
        if isinstance(width, int):
            report = model_cost(spec.name, row.dataset, width)
            params.append(report.params_mbit)
            flops.append(report.flops)
        else:
            params.append(float("nan"))
            flops.append(float("nan"))
        families.append(family)
        widths.append(width)
    df["family"] = families
    df["our_width"] = pd.array([w if isinstance(w, int) else None for w in widths], dtype="Int64")
    df["our_params_mbit"] = params
    df["our_flops"] = flops
    if drop_unmatched:
        df = df[df["our_flops"].notna()]
    return df.reset_index(drop=True)
