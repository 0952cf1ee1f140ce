"""Published results of the SoFAR, IGP and BinaryDenseNet papers.

``load_published`` returns one row per model result printed in

* ``sofar``: SoFAR paper, Tables 1-4 (ImageNet / CIFAR-100),
* ``binarydensenet``: Bethge et al., BinaryDenseNet, Tables 2-6 (CIFAR-10 / ImageNet),
* ``igp``: the same SoFAR work titled "IGP", Tables 1, 3 and 4.

Conventions:

* ``top1_error`` / ``top5_error`` are **errors in percent**. SoFAR and IGP print errors;
  BinaryDenseNet prints accuracies, stored here as ``100 - accuracy`` (2 decimals).
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

from importlib import resources

import pandas as pd

COLUMNS = [
    "source",
    "table",
    "model_printed",
    "preset",
    "dataset",
    "bits",
    "width",
    "top1_error",
    "top5_error",
    "params_mbit",
    "flops",
    "memory_mb",
    "model_size_mb",
    "note",
]
FLOAT_COLUMNS = [
    "width",
    "top1_error",
    "top5_error",
    "params_mbit",
    "flops",
    "memory_mb",
    "model_size_mb",
]
SOURCES = ("sofar", "binarydensenet", "igp")
_CSV = "published_results.csv"


def load_published(source: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Published results, optionally filtered by ``source`` and ``dataset``.

    ``source`` is one of ``"sofar"``, ``"binarydensenet"``, ``"igp"``; ``dataset`` is e.g.
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
            dtype={c: "float64" for c in FLOAT_COLUMNS} | {"table": "int64", "bits": "int64"},
        )
    df = df[COLUMNS]
    if source is not None:
        df = df[df["source"] == source]
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    return df.reset_index(drop=True)
