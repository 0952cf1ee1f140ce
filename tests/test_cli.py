"""Command line: the JSON contracts, the paper tables, and one-line errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sofar_cost.cli import app

runner = CliRunner()
COMPARE_KEYS = {"model", "dataset", "width", "params_mbit", "flops", "fp_params",
                "binary_params", "fp_macs", "binary_macs"}  # fmt: skip


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_compare_json_contract_and_ratios() -> None:
    rows = json.loads(run("compare", "rf-c4d8", "bireal18", "--format", "json"))
    assert [r["model"] for r in rows] == ["rf-c4d8-37", "bireal18"]
    for row in rows:
        assert row.keys() >= COMPARE_KEYS
        assert all(isinstance(row[k], int | float) for k in COMPARE_KEYS - {"model", "dataset"})
    assert rows[0]["width"] == 41
    assert round(rows[0]["params_mbit"], 2) == 32.24
    assert rows[0]["params_ratio"] == pytest.approx(32.237603 / 33.175552)
    assert rows[1]["flops_ratio"] == 1.0


def test_compare_table_csv_markdown_and_per_layer() -> None:
    out = run("compare", "rf-c4d8", "bireal18")
    assert "% bireal18" in out and "32.24" in out
    csv = run("compare", "bireal18", "--dataset", "cifar100", "--format", "csv")
    assert csv.splitlines()[0].startswith("model,dataset,width,params_mbit,flops")
    assert "| bireal18 | cifar100 | 64 | 18.18 |" in run("compare", "bireal18", "-d", "cifar100",
                                                          "-f", "markdown")  # fmt: skip
    rows = json.loads(run("compare", "bireal18", "--per-layer", "-f", "json"))
    assert sum(layer["binary_macs"] for layer in rows[0]["layers"]) == 1_676_279_808
    assert "stem.0" in run("compare", "bireal18", "--per-layer")


def test_compare_width_and_count_options() -> None:
    rows = json.loads(run("compare", "rf-c4d8", "--width", "48", "-f", "json"))
    assert rows[0]["width"] == 48
    rows = json.loads(run("compare", "bireal18", "--count", "batchnorm,pooling", "-f", "json"))
    assert rows[0]["fp_other_ops"] > 0


@pytest.mark.slow  # traces every row of a table
@pytest.mark.parametrize("table", ["imagenet", "cifar100"])
def test_table_reproduces_every_consistent_row(table: str) -> None:
    rows = json.loads(run("table", table, "--format", "json"))
    assert all({"paper_params_mbit", "paper_flops"} <= r.keys() for r in rows)
    failed = sorted({r["model"] for r in rows if not r["reproduced"]})
    assert all(name.startswith("drf-") for name in failed)
    assert len(rows) - len(failed) == {"imagenet": 9, "cifar100": 10}[table]


def test_ablation_table_counts_like_its_counterparts() -> None:
    rows = json.loads(run("table", "ablation", "-f", "json"))
    by_model = {r["model"]: r for r in rows}
    assert by_model["f-c3d4-21"]["params_mbit"] == by_model["rf-c3d4-21"]["params_mbit"]
    assert by_model["df-c2d2-69"]["flops"] == by_model["drf-c2d2-69"]["flops"]


def test_list_with_wildcards() -> None:
    out = run("list", "drf-*", "-f", "json")
    assert [r["model"] for r in json.loads(out)] == ["drf-c2d2-51", "drf-c2d2-69",
                                                     "drf-c3d4-97", "drf-c3d4-133"]  # fmt: skip
    assert "no model matches" in run("list", "zzz*", code=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "rf-c4d9", "bireal18"], "did you mean: rf-c4d8"),
        (["compare", "bireal18", "--width", "0"], "width must be an integer"),
        (["compare", "bireal18", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["compare", "bireal18", "--format", "yaml"], "unknown format 'yaml'"),
        (["compare", "bireal18", "--count", "softmax"], "unknown --count category"),
        (["compare", "rf-c9d256-261"], "columns must be 1..6"),
        (["table", "table9"], "unknown table"),
        (["solve", "rf-c4d8"], "give a baseline"),
        (["solve", "rf-c4d8", "--budget-mbit", "0.01"], "no width fits"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_solve_json_contract() -> None:
    out = json.loads(run("solve", "rf-c4d8", "--match", "bireal18", "--format", "json"))
    assert out["width"] == 41
    assert {"model", "baseline", "on", "width", "params_mbit", "flops",
            "baseline_params_mbit", "baseline_flops"} <= out.keys()  # fmt: skip
    out = json.loads(run("solve", "rf-c4d8", "--match", "bireal18", "-d", "cifar100", "-f", "json"))
    assert out["width"] == 36
    table = run("solve", "rf-c4d8", "--match", "bireal18")
    assert "width = 41" in table and "width 42" in table and "baseline bireal18" in table


@pytest.mark.slow  # solves several fractal depths
def test_solve_a_whole_family_by_columns() -> None:
    rows = json.loads(run("solve", "rf-c4d8", "--match", "bireal18", "--columns", "3..5", "-f",
                          "json"))  # fmt: skip
    assert [(r["model"], r["width"]) for r in rows] == [
        ("rf-c3d4-21", 53), ("rf-c4d8-37", 41), ("rf-c5d16-69", 31)]  # fmt: skip
    assert all(r["params_ratio"] <= 1 for r in rows)
    assert "rf-c6d32-133" in run("solve", "rf-c4d8", "--match", "bireal18", "--columns", "6")
    assert "must lie in 1..4" in run("solve", "drf-c2d2", "--match", "bdn51", "--columns", "1..5",
                                     code=2)  # fmt: skip
    assert "--columns needs a fractal model" in run("solve", "bireal34", "--match", "bireal18",
                                                    "--columns", "2", code=2)  # fmt: skip


@pytest.mark.slow  # traces a deep DenseNet at many widths
def test_solve_reports_the_paper_width_beside_ours_for_drf() -> None:
    out = json.loads(run("solve", "drf-c2d2", "--match", "bdn51", "-f", "json"))
    assert out["paper_width"] == 53 and out["width"] > 53
    assert "not reproduced" in out["note"]
    text = run("solve", "drf-c2d2", "--match", "bdn51")
    assert "the paper uses width 53" in text


@pytest.mark.slow  # renders and writes both figure formats
def test_plot_command(tmp_path) -> None:
    out = run("plot", "accuracy-vs-params", "-d", "cifar100", "--out", str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").exists() and (tmp_path / "p.svg").exists()
    assert "wrote" in out
    assert "unknown plot" in run("plot", "accuracy-vs-flop", code=2)
    assert "unknown source 'larq'" in run("plot", "accuracy-vs-flops", "--include", "larq", code=2)


def test_compare_a_larq_zoo_preset_with_a_sofar_one() -> None:
    rows = json.loads(run("compare", "quicknet", "bireal18", "--format", "json"))
    assert [r["model"] for r in rows] == ["quicknet", "bireal18"]
    assert rows[0]["binary_macs"] == 1_849_688_064 and rows[0]["fp_macs"] == 29_651_712
