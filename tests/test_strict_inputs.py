"""Property tests: no config file and no command line ends in a traceback.

Configs are generated valid by construction, then (mostly) broken by exactly one mutation
that is malformed whatever the rest holds. A valid config exits 0 or 1 (over budget); a
broken one exits 2 with ``file:line: message``. Models are small and costed on the meta
device (and cached), so each example takes milliseconds once its models are costed.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from sofar_cost.cli import app

runner = CliRunner()
FAST = settings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
SLOW = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def to_toml(config: dict[str, Any]) -> str:
    """Scalars of the top level, then each [[model]] with its [model.budget]."""
    lines = [f"{k} = {toml_value(v)}" for k, v in config.items() if k != "model"]
    models = config.get("model", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        return "\n".join([*lines, f"model = {toml_value(models)}"]) + "\n"
    for model in models:
        lines.append("[[model]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in model.items() if k != "budget"]
        if isinstance(model.get("budget"), dict):
            lines.append("[model.budget]")
            lines += [f"{k} = {toml_value(v)}" for k, v in model["budget"].items()]
        elif "budget" in model:
            lines.append(f"budget = {toml_value(model['budget'])}")
    return "\n".join(lines) + "\n"


@st.composite
def valid_model(draw: st.DrawFn) -> dict[str, Any]:
    """A [[model]] the check accepts: light models only, so costing stays quick."""
    model: dict[str, Any] = {}
    if draw(st.booleans()):
        model["name"] = draw(st.sampled_from(["bireal18", "rf-c3d4", "rf-c2d2-13"]))
        if model["name"] == "rf-c2d2-13" or draw(st.booleans()):  # no default width
            model["width"] = draw(st.sampled_from([1, 8, 41]))
    else:
        model.update(family=draw(st.sampled_from(["rf", "f"])), columns=2, depth=13,
                     width=draw(st.sampled_from([4, 32])))  # fmt: skip
    dataset = draw(st.sampled_from([None, "imagenet", "cifar100"]))
    if dataset:
        model["dataset"] = dataset
    budget: dict[str, Any] = {}
    if draw(st.booleans()):
        budget["within"] = draw(st.sampled_from(["bireal18", "rf-c3d4"]))
        if draw(st.booleans()):
            budget["on"] = draw(st.sampled_from(["params", "flops", "both"]))
        if draw(st.booleans()):
            budget["tolerance"] = draw(st.sampled_from([0, 0.5, 2.0]))
    for key, values in (("max_params_mbit", [0, 10, 1e3]), ("max_flops", [1e6, 1e12])):
        if not budget or draw(st.booleans()):
            budget[key] = draw(st.sampled_from(values))
    model["budget"] = budget
    return model


BAD_WIDTHS = [0, -3, 4097, 100000, 41.5, "41", True, math.nan, [41]]
BAD_NUMBERS = [math.nan, math.inf, -math.inf, -1, "1", True]


def _set(key: str, values: list[Any], budget: bool = False) -> Any:
    def mutate(config: dict[str, Any], draw: st.DrawFn) -> None:
        model = config["model"][-1]
        (model["budget"] if budget else model)[key] = draw(st.sampled_from(values))

    return mutate


def _edit(change: Any) -> Any:
    def mutate(config: dict[str, Any], draw: st.DrawFn) -> None:
        change(config["model"][-1])

    return mutate


def _no_within_but(key: str, value: Any) -> Any:
    def change(model: dict[str, Any]) -> None:
        model["budget"].pop("within", None)
        model["budget"].update({key: value, "max_flops": 1e9})

    return _edit(change)


# Each mutation makes any valid config malformed.
MUTATIONS = {
    "unknown model key": _set("widht", [41]),
    "unknown budget key": _set("max_param", [3.0], budget=True),
    "unknown top-level key": lambda config, draw: config.update(title="x"),
    "bad width": _set("width", BAD_WIDTHS),
    "bad dataset": _set("dataset", ["mnist", 3, ""]),
    "bad name": _edit(lambda m: (m.pop("family", None), m.pop("columns", None),
                                 m.pop("depth", None), m.update(name="rf-c4d9"))),
    "non-string name": _edit(lambda m: (m.pop("family", None), m.update(name=3))),
    "bad tolerance": _edit(lambda m: m["budget"].update(within="bireal18", tolerance=math.nan)),
    "bad max_params_mbit": _set("max_params_mbit", BAD_NUMBERS, budget=True),
    "bad max_flops": _set("max_flops", BAD_NUMBERS, budget=True),
    "bad on": _edit(lambda m: m["budget"].update(within="bireal18", on="latency")),
    "on without within": _no_within_but("on", "flops"),
    "tolerance without within": _no_within_but("tolerance", 0.5),
    "unknown baseline": _edit(lambda m: m["budget"].update(within="bireal50")),
    "baseline without width": _edit(lambda m: m["budget"].update(within="rf-c2d2-13")),
    "no budget": _edit(lambda m: m.pop("budget")),
    "empty budget": _edit(lambda m: m.update(budget={})),
    "budget not a table": _edit(lambda m: m.update(budget=3)),
    "name and family": _edit(lambda m: m.update(name="bireal18", family="rf")),
    "no default width": _edit(lambda m: (m.pop("family", None), m.pop("columns", None),
                                         m.pop("depth", None), m.pop("width", None),
                                         m.update(name="rf-c2d2-13"))),
    "columns out of range": _edit(lambda m: (m.pop("name", None),
                                             m.update(family="drf", columns=5, depth=13,
                                                      width=8))),
    "no such depth": _edit(lambda m: (m.pop("name", None),
                                      m.update(family="rf", columns=2, depth=14, width=8))),
    "columns with name": _edit(lambda m: (m.pop("family", None), m.pop("depth", None),
                                          m.update(name="bireal18", columns=2))),
    "model not tables": lambda config, draw: config.update(model=draw(st.sampled_from(
        [3, [], ["x"]]))),
}  # fmt: skip
TEXT_BREAKS = ["[[model]\n", "= =\n", "width = \n", "[model.budget]\n[model.budget]\n"]


@st.composite
def config_case(draw: st.DrawFn) -> tuple[str, str | None]:
    """(TOML text, the mutation applied or None for a valid config)."""
    config: dict[str, Any] = {"model": draw(st.lists(valid_model(), min_size=1, max_size=2))}
    mutation = draw(st.sampled_from([None, *MUTATIONS, "text"]))
    if mutation in MUTATIONS:
        MUTATIONS[mutation](config, draw)
    text = to_toml(config)
    if mutation == "text":
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines)))
        text = "".join(lines[:at]) + draw(st.sampled_from(TEXT_BREAKS)) + "".join(lines[at:])
    return text, mutation


def assert_clean(result: Any) -> None:
    """No traceback: the command ended by an exit code, not an exception."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{result.output}"
    )
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1, 2), result.output


def run_check_case(tmp_path: Path, case: tuple[str, str | None]) -> None:
    text, mutation = case
    path = tmp_path / "case.toml"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["check", str(path)])
    assert_clean(result)
    if mutation is None:
        assert result.exit_code in (0, 1), f"valid config rejected:\n{text}\n{result.output}"
    else:
        assert result.exit_code == 2, f"{mutation} accepted:\n{text}\n{result.output}"
        assert re.search(re.escape(str(path)) + r":\d+: ", result.output), result.output


@FAST
@given(case=config_case())
def test_generated_configs(tmp_path: Path, case: tuple[str, str | None]) -> None:
    run_check_case(tmp_path, case)


@pytest.mark.slow
@SLOW
@given(case=config_case())
def test_generated_configs_many(tmp_path: Path, case: tuple[str, str | None]) -> None:
    run_check_case(tmp_path, case)


NAMES = ["bireal18", "rf-c3d4", "rf-c4d9", "rf-c2d2-13", "", "bireal18 ", "x" * 30]
NUMBERS = ["1", "0", "-1", "41", "4097", "100000", "nan", "inf", "-inf", "1e400", "abc", ""]


@st.composite
def command_line(draw: st.DrawFn) -> list[str]:
    """compare / solve / check with arguments drawn from valid and invalid values."""
    command = draw(st.sampled_from(["compare", "solve", "check"]))
    options = {
        "--dataset": ["imagenet", "cifar100", "mnist"],
        "--format": ["table", "json", "csv", "markdown", "yaml"],
    }
    if command == "compare":
        args = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=3))
        options |= {"--width": NUMBERS, "--count": ["batchnorm", "pooling,bias", "flops", ""],
                    "--per-layer": None}  # fmt: skip
    elif command == "solve":
        args = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=2))
        options |= {"--match": NAMES, "--budget-mbit": NUMBERS, "--on": ["params", "both", "x"],
                    "--multiple-of": NUMBERS, "--columns": ["1..2", "3", "0..9", "a", "2,x"]}
    else:
        args = draw(st.lists(st.sampled_from(["no/such.toml", "tests", "README.md"]),
                             max_size=2))  # fmt: skip
    for option in draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)):
        values = options[option]
        args += [option] if values is None else [option, draw(st.sampled_from(values))]
    return [command, *args]


def run_command_line(args: list[str]) -> None:
    if args[0] == "solve" and "--budget-mbit" not in args:
        args = [*args, "--budget-mbit", "5"]  # keep solves on Params: no trace per probe
    result = runner.invoke(app, args)
    assert_clean(result)
    if result.exit_code == 2:
        assert "error:" in result.output or "Usage:" in result.output, result.output


@FAST
@given(args=command_line())
def test_generated_command_lines(args: list[str]) -> None:
    run_command_line(args)


@pytest.mark.slow
@SLOW
@given(args=command_line())
def test_generated_command_lines_many(args: list[str]) -> None:
    run_command_line(args)
