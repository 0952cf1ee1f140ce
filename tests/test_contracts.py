"""Contracts: the JSON keys of every ``--format json`` output, the public API, a torch-free
start-up, and one kernel-support check shared by the engine and ``sofar-cost bench``."""

from __future__ import annotations

import dataclasses
import doctest
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import sofar_cost
from sofar_cost.binary import BinaryConv2d
from sofar_cost.cli import app
from sofar_cost.errors import SofarError
from sofar_cost.kernels import PackedBinaryConv2d
from sofar_cost.layer_bench import binary_conv_shapes
from sofar_cost.results import LayerBench
from sofar_cost.tracer import trace

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]

# The keys each JSON output had when these tests were written: outputs may add keys, never
# drop or rename one.
SUMMARY = {"model", "dataset", "width", "params_mbit", "flops", "fp_params", "binary_params",
           "fp_macs", "binary_macs", "fp_other_ops", "peak_activation_bytes",
           # what was not counted (issue 14)
           "input_shape", "uncounted_ops", "uncounted_multiplying_ops",
           "unmarked_sign_layers"}  # fmt: skip
KEYS = {
    "list": {"model", "alias", "paper_name", "imagenet_width", "cifar100_width", "baseline"},
    "compare": SUMMARY | {"baseline", "params_ratio", "flops_ratio", "peak_activation_mb"},
    "compare.layers": {"name", "kind", "binary", "fp_params", "binary_params", "fp_macs",
                       "binary_macs", "fp_other_ops", "output_shape", "params_mbit", "flops"},
    "solve": {"model", "baseline", "dataset", "on", "multiple_of", "columns", "width",
              "params_mbit", "flops", "baseline_params_mbit", "baseline_flops", "params_ratio",
              "flops_ratio", "paper_width", "note", "candidates", "ms_packed_predicted",
              "baseline_ms_packed_predicted", "calibration"},
    "solve.candidates": SUMMARY | {"label"},
    "table": SUMMARY | {"paper_model", "paper_params_mbit", "paper_flops", "top1_error",
                        "reproduced", "note", "match"},
    "check": {"passed", "errors", "models"},
    "check.models": {"file", "name", "model", "dataset", "width", "params_mbit", "flops",
                     "passed", "checks", "ms_packed_predicted"},
    "check.checks": {"metric", "value", "limit", "source", "passed", "excess"},
    "bench": {"model", "dataset", "threads", "kernel_variant", "popcount_ceiling_gmacs_per_s",
              "popcount_ceilings", "rounds",
              "layers", "total_binary_macs", "total_ms_xnor", "total_ms_torch_fp32",
              "total_speedup", "worst_speedup"},
}  # fmt: skip


def run_json(*args: str, code: int = 0) -> object:
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_list_compare_and_table_json_keys() -> None:
    for row in run_json("list"):
        assert row.keys() == KEYS["list"]
    rows = run_json("compare", "rf-c3d4", "bireal18", "-d", "cifar100", "--per-layer")
    for row in rows:
        assert row.keys() == KEYS["compare"] | {"layers"}
        assert row["layers"] and all(r.keys() == KEYS["compare.layers"] for r in row["layers"])
    assert run_json("compare", "bireal18")[0].keys() == KEYS["compare"]
    for row in run_json("table", "ablation"):
        assert row.keys() >= KEYS["table"]


def test_solve_json_keys() -> None:
    one = run_json("solve", "rf-c3d4", "--match", "bireal18", "-d", "cifar100")
    assert one.keys() == KEYS["solve"]
    assert all(c.keys() == KEYS["solve.candidates"] for c in one["candidates"])
    family = run_json("solve", "rf-c3d4", "--budget-mbit", "20", "-d", "cifar100",
                      "--columns", "1..2")  # fmt: skip
    assert [row.keys() for row in family] == [KEYS["solve"]] * 2


def test_check_json_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[model]]\nname = "rf-c3d4"\ndataset = "cifar100"\n'
                      '[model.budget]\nwithin = "bireal18"\non = "both"\nmax_flops = 1e9\n')
    report = run_json("check", str(config))
    assert report.keys() == KEYS["check"]
    for model in report["models"]:
        assert model.keys() == KEYS["check.models"]
        assert all(c.keys() == KEYS["check.checks"] for c in model["checks"])


def test_bench_json_keys_are_the_result_fields() -> None:
    """The bench itself is timed in test_bench_cli; its JSON is the LayerBench fields."""
    assert {f.name for f in dataclasses.fields(LayerBench)} == KEYS["bench"]


def test_version_and_public_api() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"sofar-cost {sofar_cost.__version__}"
    assert sofar_cost.__version__ and sofar_cost.__version__ != "0+unknown"
    for name in sofar_cost.__all__:
        assert getattr(sofar_cost, name) is not None
    with pytest.raises(AttributeError):
        _ = sofar_cost.no_such_name
    for entry in ("create_model", "trace", "model_cost", "solve_width", "pack_model"):
        doc = getattr(sofar_cost, entry).__doc__
        assert all(part in doc for part in ("Args:", "Raises:", "Example:")), entry


@pytest.mark.parametrize("entry", ["create_model", "trace", "model_cost", "solve_width"])
def test_docstring_examples_run(entry: str) -> None:
    """The examples print real results (pack_model's compiles kernels: test_engine's job)."""
    finder = doctest.DocTestFinder(recurse=False)
    runner_ = doctest.DocTestRunner()
    for test in finder.find(getattr(sofar_cost, entry), entry, globs={}):
        runner_.run(test)
    assert runner_.summarize(verbose=False).failed == 0


def test_help_version_and_list_import_no_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from sofar_cost.cli import app\n"
        "for args in (['--help'], ['--version'], ['list', 'rf-*'], ['list', '-f', 'json']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
        "heavy = [m for m in ('torch', 'numba', 'matplotlib', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "import sofar_cost; sofar_cost.__version__\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


CONVS = {
    "3x3": dict(kernel_size=3, padding=1),
    "1x3 rectangular": dict(kernel_size=(1, 3), padding=1),
    "3x1 stride 2": dict(kernel_size=(3, 1), stride=2, padding=(1, 1)),
    "groups": dict(kernel_size=3, padding=1, groups=2),
    "dilation": dict(kernel_size=3, padding=2, dilation=2),
    "unequal padding": dict(kernel_size=3, padding=(1, 0)),
    "unequal stride": dict(kernel_size=3, stride=(1, 2)),
    "reflect padding": dict(kernel_size=3, padding=1, padding_mode="reflect"),
}


@pytest.mark.parametrize("case", sorted(CONVS))
def test_bench_accepts_exactly_what_the_kernels_run(case: str) -> None:
    conv = BinaryConv2d(4, 4, **CONVS[case])
    try:
        PackedBinaryConv2d.from_module(conv, "0")
        packable = True
    except ValueError:
        packable = False
    model = torch.nn.Sequential(conv)
    if not packable:
        with pytest.raises(SofarError, match=r"layer 0: .* not supported by the packed"):
            binary_conv_shapes(model, (1, 4, 8, 8))
        return
    shapes = binary_conv_shapes(model, (1, 4, 8, 8))
    with torch.device("meta"):
        expected = trace(model.to("meta"), (1, 4, 8, 8)).binary_macs
    assert [s.binary_macs for s in shapes] == [expected]
