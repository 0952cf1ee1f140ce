"""Budget configs (TOML) and their check: does each model stay within its budget?

A config file holds one or more ``[[model]]`` tables::

    [[model]]
    name = "rf-c4d8-37"            # a preset (or alias / fractal name) ...
    dataset = "imagenet"           # imagenet | cifar100 (default imagenet)
    width = 41                     # optional: the preset's paper width otherwise
    [model.budget]
    within = "bireal18"            # relative: at most the baseline's cost ...
    on = "params"                  # ... on params | flops | both (default params)
    tolerance = 0.0                # ... times (1 + tolerance)
    max_params_mbit = 33.2         # absolute limits (any combination)
    max_flops = 1.7e8

``name`` (and ``within``) take any model spec (docs/model-specs.md): a user model
``"path/to/file.py:make"`` or ``"package.module:make"`` comes with ``input_shape = [1, 3, 32,
32]`` and a ``[model.kwargs]`` table; a relative file path is read from the config's folder.
``strict = true`` makes uncounted ops that can multiply (FFTs, custom ops) an error.
Instead of ``name``, a model may be given by its family: ``family = "rf"`` (or ``f``, ``drf``,
``df``) with ``columns``, ``depth`` and ``width``. Malformed files raise :class:`ConfigError`
naming the file, the line where it can be found, and what would be valid.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from sofar_cost.costs import model_cost
from sofar_cost.errors import SofarError
from sofar_cost.model_source import (
    ModelSource,
    load_source,
    parse_input_shape,
    uncounted_warnings,
)
from sofar_cost.models.layers import DATASETS
from sofar_cost.results import Check, CheckReport, ModelResult
from sofar_cost.solver import METRICS as ON_VALUES
from sofar_cost.tracer import CostReport

MODEL_KEYS = {
    "name", "family", "columns", "depth", "width", "dataset", "budget", "kwargs", "input_shape",
    "strict",
}  # fmt: skip
BUDGET_KEYS = {"within", "on", "tolerance", "max_params_mbit", "max_flops"}
FAMILIES = ("rf", "f", "drf", "df")


class ConfigError(SofarError):
    """A malformed config: exit code 2."""


def config_files(paths: list[Path]) -> list[Path]:
    """TOML files named directly or found (recursively) in folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.toml"))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return files


class _Locator:
    """Finds the line of a key in the n-th [[model]] table, for error messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.starts = [i for i, line in enumerate(self.lines) if line.strip() == "[[model]]"]

    def error(self, index: int, key: str | None, message: str) -> ConfigError:
        start = self.starts[index] if index < len(self.starts) else 0
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.lines)
        line = start
        if key is not None:
            pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
            line = next((i for i in range(start, end) if pattern.match(self.lines[i])), start)
        return ConfigError(f"{self.path}:{line + 1}: {message}")


def load_config(path: Path) -> list[dict[str, Any]]:
    """Parse and validate one file; returns its model entries."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None
    locate = _Locator(path, text)
    unknown_top = set(data) - {"model"}
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {sorted(unknown_top)}; valid: [[model]]"
        )
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{path}: no [[model]] table; each config needs at least one")
    for index, entry in enumerate(models):
        _validate(entry, index, locate)
    return models


def _validate(entry: dict[str, Any], index: int, locate: _Locator) -> None:
    for key in entry:
        if key not in MODEL_KEYS:
            raise locate.error(
                index, key, f"unknown key {key!r}; valid: {', '.join(sorted(MODEL_KEYS))}"
            )
    if ("name" in entry) == ("family" in entry):
        raise locate.error(index, None, "give exactly one of 'name' (a preset) or 'family'")
    if "family" in entry:
        if entry["family"] not in FAMILIES:
            raise locate.error(index, "family", f"family must be one of {', '.join(FAMILIES)}")
        for key in ("columns", "depth", "width"):
            if key not in entry:
                raise locate.error(
                    index, None, f"missing field {key!r} for family {entry['family']!r}"
                )
    for key in ("width", "columns", "depth"):
        value = entry.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise locate.error(index, key, f"{key} must be a positive integer, got {value!r}")
    dataset = entry.get("dataset", "imagenet")
    if dataset not in DATASETS:
        raise locate.error(
            index, "dataset", f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}"
        )
    budget = entry.get("budget")
    if not isinstance(budget, dict) or not budget:
        raise locate.error(index, None, "missing field 'budget' ([model.budget] table)")
    for key, value in budget.items():
        if key not in BUDGET_KEYS:
            raise locate.error(
                index, key, f"unknown budget key {key!r}; valid: {', '.join(sorted(BUDGET_KEYS))}"
            )
        numeric = key.startswith("max_") or key == "tolerance"
        if numeric and (not isinstance(value, int | float) or isinstance(value, bool) or value < 0):
            raise locate.error(index, key, f"{key} must be a non-negative number, got {value!r}")
    if not ({"within", "max_params_mbit", "max_flops"} & budget.keys()):
        raise locate.error(
            index, None, "the budget needs 'within' or 'max_params_mbit'/'max_flops'"
        )
    if "on" in budget and budget["on"] not in ON_VALUES:
        raise locate.error(index, "on", f"on must be one of {', '.join(ON_VALUES)}")
    if not isinstance(entry.get("kwargs", {}), dict):
        raise locate.error(index, "kwargs", "kwargs must be a table: [model.kwargs]")
    if not isinstance(entry.get("strict", False), bool):
        raise locate.error(index, "strict", "strict must be true or false")
    try:
        parse_input_shape(entry.get("input_shape"))
    except SofarError as error:
        raise locate.error(index, "input_shape", str(error)) from None
    try:
        entry_sources(locate.path, entry)
    except SofarError as error:
        key = "within" if "within" in budget and str(budget["within"]) in str(error) else "name"
        raise locate.error(
            index, key if key in entry or key == "within" else None, str(error)
        ) from None


def entry_sources(path: Path, entry: dict[str, Any]) -> tuple[ModelSource, ModelSource | None]:
    """The entry's model and its baseline (``within``), if any. User models take the entry's
    ``kwargs`` and ``input_shape``; relative file paths are read from the config's folder."""
    kwargs, shape = entry.get("kwargs"), parse_input_shape(entry.get("input_shape"))
    model = load_source(_model_name(entry), kwargs, shape, base_dir=path.parent)
    within = entry["budget"].get("within")
    baseline = None if within is None else load_source(within, kwargs, shape, base_dir=path.parent)
    return model, baseline


def _model_name(entry: dict[str, Any]) -> str:
    if "name" in entry:
        return str(entry["name"])
    columns = entry["columns"]
    return f"{entry['family']}-c{columns}d{2 ** (columns - 1)}-{entry['depth']}"


def evaluate(
    path: Path, entry: dict[str, Any], reports: list[CostReport] | None = None
) -> ModelResult:
    """Cost the model and compare it with each of its limits; the cost reports used (model,
    then baseline) are appended to ``reports`` when given."""
    dataset = entry.get("dataset", "imagenet")
    source, baseline_source = entry_sources(path, entry)
    report = model_cost(source, dataset, entry.get("width"))
    result = ModelResult(
        str(path), str(entry.get("name", _model_name(entry))), report.model, report.dataset,
        int(report.width or 0), report.params_mbit, report.flops,
    )  # fmt: skip
    used = [report]
    values = {"params": report.params_mbit, "flops": report.flops}
    budget = entry["budget"]
    for metric, key in (("params", "max_params_mbit"), ("flops", "max_flops")):
        if key in budget:
            result.checks.append(Check(metric, values[metric], float(budget[key]), "absolute"))
    if baseline_source is not None:
        baseline = model_cost(baseline_source, dataset)
        used.append(baseline)
        scale = 1 + float(budget.get("tolerance", 0.0))
        base_values = {"params": baseline.params_mbit, "flops": baseline.flops}
        for metric in ON_VALUES[budget.get("on", "params")]:
            result.checks.append(
                Check(metric, values[metric], base_values[metric] * scale, baseline.model)
            )
    if reports is not None:
        reports += used
    return result


def check_configs(paths: list[Path], strict: bool = False) -> CheckReport:
    """``sofar-cost check``: load, validate and cost every config; a malformed file is
    reported in ``errors`` without hiding the others. A missing path raises ConfigError.
    Uncounted ops that can multiply are warnings, or errors under ``strict = true`` in the
    entry (or ``strict`` here, for every entry)."""
    report = CheckReport()
    for path in config_files(paths):
        try:
            entries = load_config(path)
        except SofarError as error:
            report.errors.append(str(error))
            continue
        for entry in entries:
            used: list[CostReport] = []
            try:
                report.results.append(evaluate(path, entry, used))
                entry_strict = strict or entry.get("strict", False)
                report.uncounted += uncounted_warnings(used, entry_strict)
            except SofarError as error:
                report.errors.append(f"{path}: {error}")
    return report
