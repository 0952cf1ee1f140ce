"""`sofar-cost check`: budgets pass, excesses exit 1, malformed configs exit 2 naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sofar_cost.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]

WIDENED = """
[[model]]
name = "rf-c4d8-37"
dataset = "imagenet"
width = 48
[model.budget]
within = "bireal18"
"""


def check(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["check", *args])
    return result.exit_code, result.output


def check_json(*args: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["check", *args, "--format", "json"])
    return result.exit_code, json.loads(result.stdout)


def write(tmp_path: Path, text: str, name: str = "model.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# Every config of the repository passing is `nox -s check` (part of the README's test
# command): the same `sofar-cost check configs/` run, so it is not repeated here.


def test_widened_model_fails_naming_the_parameter_excess(tmp_path: Path) -> None:
    code, out = check(str(write(tmp_path, WIDENED)))
    assert code == 1
    assert "over budget: rf-c4d8-37" in out and "params" in out and "Mbit" in out
    code, report = check_json(str(write(tmp_path, WIDENED)))
    check_row = report["models"][0]["checks"][0]
    assert check_row["metric"] == "params" and not check_row["passed"]
    assert check_row["excess"] == pytest.approx(check_row["value"] - check_row["limit"])


def test_tolerance_and_absolute_budgets(tmp_path: Path) -> None:
    tolerant = WIDENED + "tolerance = 0.5\n"
    assert check(str(write(tmp_path, tolerant)))[0] == 0
    absolute = WIDENED.replace('within = "bireal18"', "max_flops = 1e8")
    code, out = check(str(write(tmp_path, absolute)))
    assert code == 1 and "flops" in out


MALFORMED = {
    "bad_toml": ("[[model]\nname = 1", "invalid TOML"),
    "unknown_key": (WIDENED.replace("width = 48", "widht = 48"), ":5: unknown key 'widht'"),
    "unknown_preset": (WIDENED.replace('"rf-c4d8-37"', '"rf-c4d9"'), "did you mean"),
    "negative_budget": (WIDENED.replace('within = "bireal18"', "max_params_mbit = -3"),
                        "must be a non-negative finite number"),
    "missing_budget": (WIDENED.split("[model.budget]")[0], "missing field 'budget'"),
    "missing_family_field": ('[[model]]\nfamily = "rf"\ncolumns = 4\nwidth = 41\n'
                             '[model.budget]\nmax_flops = 1e9\n', "missing field 'depth'"),
    "unknown_baseline": (WIDENED.replace('"bireal18"', '"bireal50"'), "unknown model 'bireal50'"),
    "no_models": ("title = 'x'\n", "unknown top-level key"),
    "bad_dataset": (WIDENED.replace('"imagenet"', '"mnist"'),
                    ":4: dataset must be one of imagenet, cifar100, got 'mnist'"),
    "zero_width": (WIDENED.replace("width = 48", "width = 0"),
                   ":5: width must be an integer in 1..4096, got 0"),
    # found by a new user (issue 16): each used to end in a traceback or a wrong number
    "no_default_width": (WIDENED.replace('"rf-c4d8-37"', '"rf-c6d32-133"').replace(
        "width = 48\n", ""), ":3: model 'rf-c6d32-133' has no default width for imagenet; "
        "add a width = N key"),
    "huge_width": (WIDENED.replace("width = 48", "width = 100000"),
                   ":5: width must be an integer in 1..4096, got 100000"),
    "nan_tolerance": (WIDENED + "tolerance = nan\n",
                      ":8: tolerance must be a non-negative finite number, got nan"),
    "inf_limit": (WIDENED + "max_flops = inf\n", ":8: max_flops must be a non-negative finite"),
    "float_width": (WIDENED.replace("width = 48", "width = 48.0"), ":5: width must be an integer"),
    "string_width": (WIDENED.replace("width = 48", 'width = "48"'), ":5: width must be an integer"),
    "budget_not_a_table": (WIDENED.split("[model.budget]")[0] + "budget = 3\n",
                           ":6: budget must be a [model.budget] table"),
    "on_without_within": (WIDENED.replace('within = "bireal18"', 'on = "flops"\nmax_flops = 1e9'),
                          ":7: 'on' applies to a baseline"),
    "family_columns": ('[[model]]\nfamily = "drf"\ncolumns = 5\ndepth = 51\nwidth = 41\n'
                       '[model.budget]\nmax_flops = 1e9\n', ":3: columns must be in 1..4"),
    "family_depth": ('[[model]]\nfamily = "rf"\ncolumns = 4\ndepth = 36\nwidth = 41\n'
                     '[model.budget]\nmax_flops = 1e9\n', ":4: no RF-c4 ResNet has depth 36"),
    "baseline_without_width": (WIDENED.replace('"bireal18"', '"rf-c6d32-133"'),
                               ":7: baseline 'rf-c6d32-133' has no default width"),
    "not_utf8": ("\udcff", ":1: not UTF-8 text"),
    "bad_toml_line": ('[[model]]\nname = "bireal18"\nwidth = \n', ":3: invalid TOML"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_configs_exit_2_naming_the_file(tmp_path: Path, case: str) -> None:
    text, message = MALFORMED[case]
    path = tmp_path / f"{case}.toml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    code, out = check(str(path))
    assert code == 2, out
    assert f"{path}" in out and message in out
    assert "Traceback" not in out


def test_a_malformed_file_does_not_hide_the_others(tmp_path: Path) -> None:
    write(tmp_path, "[[model]\n", "a_broken.toml")
    write(tmp_path, WIDENED.replace("width = 48", "width = 41"), "b_good.toml")
    code, report = check_json(str(tmp_path))
    assert code == 2
    assert len(report["errors"]) == 1 and report["models"][0]["passed"]


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    code, out = check("no/such/dir")
    assert code == 2 and "no such file or folder" in out
    code, out = check(str(tmp_path))
    assert code == 2 and "no *.toml config in this folder" in out
