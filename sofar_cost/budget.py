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
    max_latency_ms = 30.0          # predicted packed latency (on = "latency" too) ...
    calibration = "calib.json"     # ... under this calibration, relative to the config file

A latency budget predicts with the calibration the config states, used as stated data on any
machine (no CPU check), so the verdict is the same on every runner (docs/latency.md).

``name`` (and ``within``) take any model spec (docs/model-specs.md): a user model
``"path/to/file.py:make"`` or ``"package.module:make"`` comes with ``input_shape = [1, 3, 32,
32]`` and a ``[model.kwargs]`` table; a relative file path is read from the config's folder.
Loading validates only a spec's syntax (importing user code needs torch); a user model that
fails to import or build is a file:line error when the check costs it.
``strict = true`` makes uncounted ops that can multiply (FFTs, custom ops) an error.

Instead of ``name``, a model may be given by its family: ``family = "rf"`` (or ``f``, ``drf``,
``df``) with ``columns``, ``depth`` and ``width``.

Every key's type and range is checked when the file is loaded (no model is built for that),
and every problem is a :class:`ConfigError` reading ``file:line: what is wrong and what would
be valid``. ``sofar-cost check`` exits 2 for any of them and 1 only for an exceeded budget.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sofar_cost.count_options import METRICS as ON_VALUES
from sofar_cost.errors import SofarError
from sofar_cost.models.architectures import DATASETS, MAX_FRACTAL_COLUMNS
from sofar_cost.models.registry import MAX_WIDTH, check_width, fractal_name, resolve
from sofar_cost.results import Check, CheckReport, ModelResult
from sofar_cost.spec_text import is_callable_spec, parse_input_shape, split_spec

FAMILIES = tuple(MAX_FRACTAL_COLUMNS)
LIMITS = {"params": "max_params_mbit", "flops": "max_flops", "latency": "max_latency_ms"}


class ConfigError(SofarError):
    """A malformed config: exit code 2."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range
        return False


def _one_of(valid: tuple[str, ...] | dict[str, Any]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, str) and value in valid
        return None if ok else f"must be one of {', '.join(valid)}, got {value!r}"

    return check


def _text(value: Any) -> str | None:
    ok = isinstance(value, str) and value.strip() != ""
    if ok and is_callable_spec(value):
        try:
            split_spec(value)
        except SofarError as error:
            return str(error).split(": ", 1)[1]
    return None if ok else f"must be a model name or spec (a string), got {value!r}"


def _positive_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 1 else f"must be a positive integer, got {value!r}"


def _width(value: Any) -> str | None:
    try:
        check_width(value)
    except SofarError:
        return f"must be an integer in 1..{MAX_WIDTH}, got {value!r}"
    return None


def _non_negative(value: Any) -> str | None:
    ok = _is_finite(value) and value >= 0
    return None if ok else f"must be a non-negative finite number, got {value!r}"


def _path(value: Any) -> str | None:
    ok = isinstance(value, str) and value.strip() != ""
    return None if ok else f"must be a path to a calibration file (a string), got {value!r}"


def _table(value: Any) -> str | None:
    ok = isinstance(value, dict) and value
    return None if ok else "must be a [model.budget] table with at least one limit"


def _kwargs(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be a table: [model.kwargs]"


def _shape(value: Any) -> str | None:
    try:
        ok = isinstance(value, list) and parse_input_shape(value) is not None
    except SofarError:
        ok = False
    return None if ok else f"must be a list of positive integers like [1, 3, 32, 32], got {value!r}"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


# key -> its check: None when valid, else what is wrong ("must be ..., got ...").
MODEL_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "name": _text,
    "family": _one_of(FAMILIES),
    "columns": _positive_int,  # and within the family's range, checked below
    "depth": _positive_int,
    "width": _width,
    "dataset": _one_of(DATASETS),
    "budget": _table,
    "kwargs": _kwargs,  # keywords of a user model's callable
    "input_shape": _shape,  # a user model's input
    "strict": _bool,
}
BUDGET_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "within": _text,
    "on": _one_of(ON_VALUES),
    "tolerance": _non_negative,
    "max_params_mbit": _non_negative,
    "max_flops": _non_negative,
    "max_latency_ms": _non_negative,
    "calibration": _path,
}
MODEL_KEYS = set(MODEL_FIELDS)
BUDGET_KEYS = set(BUDGET_FIELDS)


class _Locator:
    """Finds the line of a key in the n-th [[model]] table, for error messages."""

    HEADER = re.compile(r"^\s*\[\[\s*model\s*\]\]")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.starts = [i for i, line in enumerate(self.lines) if self.HEADER.match(line)]

    def line(self, index: int, key: str | None = None) -> int:
        """1-based line of ``key`` in model ``index`` (or of its header)."""
        start = self.starts[index] if index < len(self.starts) else 0
        end = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.lines)
        if key is not None:
            pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
            start = next((i for i in range(start, end) if pattern.match(self.lines[i])), start)
        return start + 1

    def error(self, index: int | None, key: str | None, message: str) -> ConfigError:
        line = 1 if index is None else self.line(index, key)
        return ConfigError(f"{self.path}:{line}: {message}")


@dataclass(frozen=True)
class ConfigModel:
    """One validated ``[[model]]``: what to cost, its limits, and where it was written."""

    label: str
    model: str  # preset, alias or fractal name, or a user model's spec
    dataset: str
    width: int | None
    within: str | None
    on: str
    tolerance: float
    limits: dict[str, float]  # metric -> absolute limit
    path: Path
    index: int
    locate: _Locator = field(repr=False, compare=False)
    calibration: Any = field(default=None, repr=False, compare=False)  # a latency budget's
    kwargs: dict[str, Any] = field(default_factory=dict)  # a user model's keywords
    input_shape: tuple[int, ...] | None = None  # a user model's input
    strict: bool = False

    def error(self, key: str | None, message: str) -> ConfigError:
        return self.locate.error(self.index, key, message)


def config_files(paths: list[Path]) -> list[Path]:
    """TOML files named directly or found (recursively) in folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.toml") if p.is_file())
            if not found:
                raise ConfigError(f"{path}: no *.toml config in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}:1: not UTF-8 text ({error.reason})") from None
    except OSError as error:
        raise ConfigError(f"{path}:1: cannot read: {error.strerror or error}") from None


def load_config(path: Path) -> list[ConfigModel]:
    """Parse and validate one file: every key's type and range, and every name."""
    text = _read(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))
        line = found.group(1) if found else "1"
        raise ConfigError(f"{path}:{line}: invalid TOML: {error}") from None
    locate = _Locator(path, text)
    unknown_top = sorted(set(data) - {"model"})
    if unknown_top:
        raise locate.error(None, None, f"unknown top-level key(s) {unknown_top}; valid: [[model]]")
    models = data.get("model")
    if not isinstance(models, list) or not models:
        raise locate.error(None, None, "no [[model]] table; each config needs at least one")
    return [_validate(entry, index, path, locate) for index, entry in enumerate(models)]


def _check_fields(
    table: dict[str, Any], rules: dict[str, Callable[[Any], str | None]], what: str,
    fail: Callable[[str | None, str], ConfigError],
) -> None:
    """Unknown keys, then each known key's type and range."""
    for key, value in table.items():
        if key not in rules:
            raise fail(key, f"unknown {what}key {key!r}; valid: {', '.join(sorted(rules))}")
        problem = rules[key](value)
        if problem is not None:
            raise fail(key, f"{key} {problem}")


def _validate(entry: Any, index: int, path: Path, locate: _Locator) -> ConfigModel:
    def fail(key: str | None, message: str) -> ConfigError:
        return locate.error(index, key, message)

    if not isinstance(entry, dict):
        raise fail(None, f"each model must be a [[model]] table, got {entry!r}")
    _check_fields(entry, MODEL_FIELDS, "", fail)
    if ("name" in entry) == ("family" in entry):
        raise fail(None, "give exactly one of 'name' (a preset) or 'family'")
    if "family" in entry:
        family = entry["family"]
        for key in ("columns", "depth", "width"):
            if key not in entry:
                raise fail(None, f"missing field {key!r} for family {family!r}")
        if entry["columns"] > MAX_FRACTAL_COLUMNS[family]:
            raise fail("columns", f"columns must be in 1..{MAX_FRACTAL_COLUMNS[family]} for "
                                  f"family {family!r}, got {entry['columns']}")  # fmt: skip
        name, name_key = fractal_name(family, entry["columns"], entry["depth"]), "depth"
    else:
        for key in ("columns", "depth"):
            if key in entry:
                raise fail(key, f"{key!r} goes with 'family', not with 'name'; drop it")
        name, name_key = entry["name"], "name"
    if "budget" not in entry:
        raise fail(None, "missing field 'budget' ([model.budget] table)")
    budget = entry["budget"]
    _check_fields(budget, BUDGET_FIELDS, "budget ", fail)
    if not ({"within", *LIMITS.values()} & budget.keys()):
        raise fail(None, "the budget needs 'within' or 'max_params_mbit'/'max_flops'/"
                         "'max_latency_ms'")
    for key in ("on", "tolerance"):
        if key in budget and "within" not in budget:
            raise fail(key, f"{key!r} applies to a baseline: add within = \"MODEL\"")
    dataset = entry.get("dataset", "imagenet")
    within = budget.get("within")
    user_specs = [key for key, text in (("name", name), ("within", within))
                  if text is not None and is_callable_spec(text)]
    if user_specs and "input_shape" not in entry:
        raise fail(user_specs[0], "a user model spec needs input_shape = [N, C, H, W] "
                                  "(e.g. [1, 3, 32, 32]) in its [[model]]")  # fmt: skip
    if "name" not in user_specs:
        spec = _resolve(name, fail, name_key)
        if "width" not in entry and not spec.has_default_width(dataset):
            raise fail(name_key, f"model {spec.name!r} has no default width for {dataset}; "
                       f"add a width = N key (1..{MAX_WIDTH}) to this [[model]]")
    if within is not None and "within" not in user_specs:
        baseline = _resolve(within, fail, "within")
        if not baseline.has_default_width(dataset):
            raise fail("within", f"baseline {baseline.name!r} has no default width for "
                                 f"{dataset}; within needs a preset")  # fmt: skip
    return ConfigModel(
        label=str(entry.get("name", name)), model=name, dataset=dataset,
        width=entry.get("width"), within=within, on=budget.get("on", "params"),
        tolerance=float(budget.get("tolerance", 0.0)),
        limits={m: float(budget[k]) for m, k in LIMITS.items() if k in budget},
        path=path, index=index, locate=locate,
        calibration=_latency_calibration(budget, path, fail), kwargs=entry.get("kwargs", {}),
        input_shape=parse_input_shape(entry.get("input_shape")),
        strict=entry.get("strict", False),
    )  # fmt: skip


def _latency_calibration(budget: dict[str, Any], path: Path,
                         fail: Callable[[str | None, str], ConfigError]) -> Any:
    """The calibration a latency budget states (read, not checked against this machine);
    None for other budgets. A latency budget without one, or one without a latency budget,
    or a missing/malformed file: ConfigError at its line."""
    from sofar_cost.latency import config_calibration

    latency = "max_latency_ms" in budget or budget.get("on") == "latency"
    if latency and "calibration" not in budget:
        raise fail(None, "a latency budget (max_latency_ms or on = \"latency\") needs "
                         "calibration = \"path\" (a 'sofar-cost calibrate' file)")
    if "calibration" not in budget:
        return None
    if not latency:
        raise fail("calibration", "calibration is only used by a latency budget: "
                                  "max_latency_ms or on = \"latency\"")
    try:
        return config_calibration(path, budget["calibration"])
    except SofarError as error:
        raise fail("calibration", str(error)) from None


def _resolve(name: str, fail: Callable[[str | None, str], ConfigError], key: str) -> Any:
    try:
        return resolve(name)
    except SofarError as error:
        raise fail(key, str(error)) from None


def evaluate(entry: ConfigModel, reports: list[Any] | None = None) -> ModelResult:
    """Cost the model (and its baseline) and compare it with each of its limits; the cost
    reports used (model, then baseline) are appended to ``reports`` when given."""
    from sofar_cost.costs import model_cost  # builds models: torch only when costing

    model = _source(entry, entry.model, "name")
    baseline_source = _source(entry, entry.within, "within") if entry.within else None
    try:
        report = model_cost(model, entry.dataset, entry.width)
        baseline = model_cost(baseline_source, entry.dataset) if baseline_source else None
    except SofarError as error:
        raise entry.error(_cost_key(entry), str(error)) from None
    except (RuntimeError, ValueError, ArithmeticError) as error:  # the builder refused
        raise entry.error("width", f"model {entry.model!r} cannot be built at width "
                                   f"{entry.width}: {error}") from None  # fmt: skip
    result = ModelResult(
        str(entry.path), entry.label, report.model, report.dataset, int(report.width or 0),
        report.params_mbit, report.flops,
    )  # fmt: skip
    values = _values(report, model, entry)
    result.ms_packed_predicted = values.get("latency")
    for metric, limit in entry.limits.items():
        result.checks.append(Check(metric, values[metric], limit, "absolute"))
    if baseline is not None:
        base_values = _values(baseline, baseline_source, entry)
        for metric in ON_VALUES[entry.on]:
            limit = base_values[metric] * (1 + entry.tolerance)
            result.checks.append(Check(metric, values[metric], limit, baseline.model))
    if reports is not None:
        reports += [report, baseline]
    return result


def _source(entry: ConfigModel, text: str, key: str) -> Any:
    """The entry's model (or baseline) source; a user model's relative file path is read from
    the config's folder, and an import failure is a file:line error at ``key``."""
    from sofar_cost.model_source import load_source

    try:
        return load_source(text, entry.kwargs, entry.input_shape, base_dir=entry.path.parent)
    except SofarError as error:
        raise entry.error(key, str(error)) from None


def _cost_key(entry: ConfigModel) -> str:
    """Where a costing error points: a user model's spec, else a preset's width."""
    return "name" if is_callable_spec(entry.model) else "width"


def _values(report: Any, source: Any, entry: ConfigModel) -> dict[str, float]:
    """The costs a budget can limit; with a latency budget, the predicted packed ms under
    the config's calibration."""
    values = {"params": report.params_mbit, "flops": report.flops}
    if entry.calibration is not None:
        from sofar_cost.latency import predict_model

        try:
            values["latency"] = predict_model(source, entry.dataset, report.width,
                                              entry.calibration, ("packed",)).ms_packed
        except SofarError as error:
            raise entry.error("max_latency_ms", str(error)) from None
    return values


def check_configs(paths: list[Path], strict: bool = False) -> CheckReport:
    """``sofar-cost check``: load, validate and cost every config; a malformed file (or model)
    is reported in ``errors`` without hiding the others. A missing path raises ConfigError.
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
            used: list[Any] = []
            try:
                result = evaluate(entry, used)
                from sofar_cost.model_source import uncounted_warnings  # torch: only once costed

                report.uncounted += uncounted_warnings(used, strict or entry.strict)
                report.results.append(result)
            except ConfigError as error:
                report.errors.append(str(error))
            except SofarError as error:  # --strict: uncounted ops, at the model's line
                report.errors.append(str(entry.error("strict" if entry.strict else "name",
                                                     str(error))))
    return report
