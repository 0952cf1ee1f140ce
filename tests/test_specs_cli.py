"""One user model file, the same spec in compare, solve, check and bench (issue 14's bars)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sofar_cost.cli import app

runner = CliRunner()
DATA = Path(__file__).resolve().parent / "data"
SPEC = str(DATA / "user_model.py") + ":make"
SHAPE = ["--input-shape", "1,3,32,32"]

# tests/data/user_model.py at width 16 on 1x3x32x32, by hand (see its docstring):
FP_PARAMS = 27 * 16 + 16 * 10  # stem + classifier = 592
BINARY_PARAMS = 9 * 16 * 16  # 2,304
FP_MACS = 32 * 32 * 16 * 27 + 16 * 10  # 442,528
BINARY_MACS = 32 * 32 * 16 * 9 * 16  # 2,359,296


def invoke(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def test_compare_a_user_file_gives_the_hand_counts() -> None:
    result = invoke("compare", SPEC, "--model-arg", "width=16", *SHAPE, "-f", "json")
    (row,) = json.loads(result.stdout)
    assert row["model"] == "user_model.py:make" and row["width"] == 16
    assert row["input_shape"] == [1, 3, 32, 32] and row["dataset"] == "input 1x3x32x32"
    assert (row["fp_params"], row["binary_params"]) == (FP_PARAMS, BINARY_PARAMS)
    assert (row["fp_macs"], row["binary_macs"]) == (FP_MACS, BINARY_MACS)
    assert row["params_mbit"] == pytest.approx((592 * 32 + 2304) / 1e6)  # 0.021248
    assert row["flops"] == pytest.approx(442_528 + 2_359_296 / 64)  # 479,392
    assert row["uncounted_ops"] == {} and row["unmarked_sign_layers"] == []
    assert result.stderr == ""
    table = invoke("compare", SPEC, "bireal18", "--model-arg", "width=16", *SHAPE).stdout
    assert "user_model.py:make" in table and "0.02" in table


def test_solve_varies_the_width_keyword() -> None:
    # Mbit(w) = (37 w * 32 + 9 w^2) / 1e6: 0.048873 at w = 33, 0.05066 at w = 34
    out = json.loads(invoke("solve", SPEC, "--budget-mbit", "0.05", *SHAPE, "-f", "json").stdout)
    assert out["width"] == 33 and out["params_mbit"] == pytest.approx(0.048873)
    assert "user_model.py:make width = 33" in invoke("solve", SPEC, "--budget-mbit", "0.05",
                                                      *SHAPE).stdout  # fmt: skip
    # classes c at width 16: (432 + 16 c) * 32 + 2304 bits, 0.04992 Mbit at c = 66
    out = json.loads(invoke("solve", SPEC, "--budget-mbit", "0.05", "--width-arg", "classes",
                            *SHAPE, "-f", "json").stdout)  # fmt: skip
    assert out["width"] == 66


CONFIG = """
[[model]]
name = "data/user_model.py:make"
input_shape = [1, 3, 32, 32]
{strict}
[model.kwargs]
width = {width}
fft = {fft}
[model.budget]
max_params_mbit = 0.05
"""


def write_config(tmp_path: Path, width: int, fft: bool = False, strict: bool = False) -> str:
    folder = tmp_path / "cfg"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "user_model.py").write_text((DATA / "user_model.py").read_text())
    text = CONFIG.format(width=width, fft=str(fft).lower(), strict="strict = true" * strict)
    (folder / "budget.toml").write_text(text)
    return str(folder / "budget.toml")


def test_check_config_naming_a_user_file(tmp_path: Path) -> None:
    result = invoke("check", write_config(tmp_path, 16), "-f", "json")
    (model,) = json.loads(result.stdout)["models"]
    assert model["passed"] and model["params_mbit"] == pytest.approx(0.021248)
    # width 40: (37 * 40 * 32 + 9 * 1600) / 1e6 = 0.06176 Mbit > 0.05
    result = invoke("check", write_config(tmp_path / "over", 40), code=1)
    assert "over budget" in result.stderr and "0.01176" in result.stderr


def test_strict_check_refuses_uncounted_fft(tmp_path: Path) -> None:
    warned = invoke("check", write_config(tmp_path, 16, fft=True))
    assert "aten._fft_r2c x1" in warned.stderr
    strict = invoke("check", write_config(tmp_path / "s", 16, fft=True, strict=True), code=2)
    assert "aten._fft_r2c" in strict.stderr and "--strict" in strict.stderr


@pytest.mark.parametrize(
    ("replace", "line", "message"),
    [
        (("input_shape = [1, 3, 32, 32]", ""), 3, "needs input_shape"),
        (("[1, 3, 32, 32]", "[1, 3, 0]"), 4, "input_shape must be a list of positive integers"),
        (("[model.kwargs]", "kwargs = 3\n[model.k]"), 6, "kwargs must be a table"),
        ((":make", ":"), 3, "expected package.module:callable"),
        ((":make", ":nope"), 3, "has no attribute 'nope'"),
    ],
)
def test_malformed_user_model_configs_exit_2_at_their_line(
    tmp_path: Path, replace: tuple[str, str], line: int, message: str
) -> None:
    path = Path(write_config(tmp_path, 16))
    path.write_text(CONFIG.replace(*replace).format(width=16, fft="false", strict=""))
    (error,) = invoke("check", str(path), code=2).stderr.strip().splitlines()
    assert error.startswith(f"error: {path}:{line}: ") and message in error, error


def test_fft_is_reported_and_strict_exits_2() -> None:
    args = ["compare", SPEC, "--model-arg", "fft=true", *SHAPE]
    result = invoke(*args, "-f", "json")
    (row,) = json.loads(result.stdout)
    assert row["uncounted_multiplying_ops"] == {"aten._fft_r2c": 1, "aten._fft_c2r": 1}
    assert row["binary_macs"] == BINARY_MACS  # counted as before, the FFT as 0
    assert result.stderr.count("\n") == 1 and "aten._fft_r2c x1, aten._fft_c2r x1" in result.stderr
    strict = invoke(*args, "--strict", code=2)
    assert strict.stderr.startswith("error: ") and strict.stderr.count("\n") == 1
    assert "aten._fft_r2c" in strict.stderr


def test_sign_fed_layer_not_marked_binary_is_named() -> None:
    result = invoke("compare", SPEC, "--model-arg", "marked=false", *SHAPE, "-f", "json")
    (row,) = json.loads(result.stdout)
    assert row["unmarked_sign_layers"] == ["binary"] and row["binary_macs"] == 0
    assert "binary take a sign() input but are not marked binary" in result.stderr
    assert "sofar_binary = True" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"{SPEC[:-5]}:missing", *SHAPE], "has no attribute 'missing'"),
        ([SPEC], "needs an input shape: --input-shape"),
        ([SPEC, "--input-shape", "1,3,x"], "input shape must be positive integers"),
        ([SPEC, "--model-arg", "width"], "--model-arg expects KEY=VALUE"),
        ([SPEC, "--input-shape", "1,5,32,32"], "forward failed on input shape 1,5,32,32"),
        (["not_a_package.models:make", *SHAPE], "cannot import not_a_package.models"),
    ],
)
def test_bad_specs_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = invoke("compare", *args, code=2)
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_compare_per_layer_rolled_up_to_a_depth() -> None:
    rows = json.loads(invoke("compare", "bireal18", "--per-layer", "--depth", "1",
                             "-f", "json").stdout)  # fmt: skip
    layers = rows[0]["layers"]
    assert [r["name"] for r in layers] == ["stem", "stages", "head"]
    assert sum(r["binary_macs"] for r in layers) == rows[0]["binary_macs"]
    assert sum(r["fp_macs"] for r in layers) == rows[0]["fp_macs"]
    assert "stages" in invoke("compare", "bireal18", "--per-layer", "--depth", "1").stdout


def test_bench_times_the_user_models_binary_layer() -> None:
    result = invoke("bench", SPEC, "--model-arg", "width=16", *SHAPE, "--repeat", "1", "-f", "json")
    out = json.loads(result.stdout)
    assert out["model"] == "user_model.py:make"
    (layer,) = out["layers"]
    assert layer["name"] == "binary" and layer["binary_macs"] == BINARY_MACS
    assert layer["ms_xnor"] > 0 and layer["ms_torch_fp32"] > 0


@pytest.mark.slow
def test_bench_end_to_end_runs_the_user_model() -> None:
    result = invoke("bench", SPEC, *SHAPE, "--end-to-end", "--repeat", "1", "-f", "json")
    out = json.loads(result.stdout)
    assert out["model"] == "user_model.py:make" and out["width"] == 16
    assert out["flops"] == pytest.approx(442_528 + 2_359_296 / 64)
    assert out["ms_packed"] > 0
