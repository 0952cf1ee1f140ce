"""Model specs: presets, ``module:callable`` and ``file.py:callable`` as one ModelSource."""

from __future__ import annotations

import json

import pytest

from sofar_cost.costs import WidthCosts
from sofar_cost.errors import SofarError
from sofar_cost.model_source import (
    CallableSource,
    PresetSource,
    as_source,
    load_source,
    parse_input_shape,
    parse_model_args,
    parse_value,
)
from sofar_cost.solver import Budget, solve_width
from tests.conftest import cost

USER_FILE = "tests/data/user_model.py"
SHAPE = (1, 3, 32, 32)


def hand_counts(w: int, classes: int = 10, h: int = 32) -> dict[str, int]:
    """tests/data/user_model.py by hand: stem 3->w 3x3, binary w->w 3x3, linear w->classes."""
    return {
        "fp_params": 27 * w + w * classes,
        "binary_params": 9 * w * w,
        "fp_macs": h * h * w * 27 + w * classes,
        "binary_macs": h * h * w * 9 * w,
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [("16", 16), ("true", True), ("0.5", 0.5), ("[1, 2]", [1, 2]), ('"relu"', "relu"),
     ("relu", "relu"), ("null", None), ("1,3", "1,3")],
)  # fmt: skip
def test_parse_value_reads_literals_else_strings(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_parse_model_args_and_input_shape() -> None:
    assert parse_model_args(["width=16", "act = relu", "fft=false"]) == {
        "width": 16, "act": "relu", "fft": False,
    }  # fmt: skip
    with pytest.raises(SofarError, match="KEY=VALUE"):
        parse_model_args(["width"])
    assert parse_input_shape("1,3,32,32") == SHAPE
    assert parse_input_shape([1, 3, 32, 32]) == SHAPE
    assert parse_input_shape(None) is None
    for bad in ("1,3,x", "0,3,32,32", "", [1, True]):
        with pytest.raises(SofarError, match="input shape"):
            parse_input_shape(bad)


def test_preset_is_a_source_with_the_same_costs() -> None:
    source = load_source("rf-c4d8", {"width": 3}, (1, 1, 1, 1))  # user options leave presets be
    assert isinstance(source, PresetSource) and source.name == "rf-c4d8-37"
    assert source.input_shape("cifar100") == (1, 3, 32, 32)
    assert source.default_width("imagenet") == 41
    report = load_source("bireal18").report("cifar100")
    assert report.summary() == cost("bireal18", "cifar100").summary()


@pytest.mark.parametrize("spec", [f"{USER_FILE}:make", "tests.data.user_model:make"])
def test_user_callable_gives_the_hand_counts(spec: str) -> None:
    source = load_source(spec, {"width": 16}, SHAPE)
    assert isinstance(source, CallableSource)
    report = source.report()
    counts = hand_counts(16)
    assert {k: getattr(report, k) for k in counts} == counts
    assert report.params_mbit == (counts["fp_params"] * 32 + counts["binary_params"]) / 1e6
    assert report.flops == counts["fp_macs"] + counts["binary_macs"] / 64
    assert report.width == 16 and report.input_shape == SHAPE
    assert report.dataset == "input 1x3x32x32"
    assert report.uncounted_ops == {} and report.unmarked_sign_layers == []
    assert source.report(width=8).binary_macs == hand_counts(8)["binary_macs"]


def test_width_defaults_to_the_callables_own_default() -> None:
    assert load_source(f"{USER_FILE}:make", None, SHAPE).report().width == 16


def test_model_that_cannot_run_on_meta_falls_back_to_cpu() -> None:
    report = load_source(f"{USER_FILE}:item_in_forward", None, SHAPE).report()
    assert report.fp_macs == 32 * 32 * 8 * 27 and report.width == 8


def test_solver_varies_the_width_keyword() -> None:
    costs = WidthCosts(load_source(f"{USER_FILE}:make", {"width": 16}, SHAPE))
    # Mbit(w) = (37 w * 32 + 9 w^2) / 1e6: w = 33 gives 0.048873, w = 34 gives 0.05066
    assert solve_width(costs, Budget(params_mbit=0.05)).width == 33
    renamed = WidthCosts(load_source(f"{USER_FILE}:make", None, SHAPE, width_arg="classes"))
    # classes c: (16*27 + 16 c) * 32 + 2304 bits; c = 66 -> 0.04992 Mbit, c = 67 -> 0.050432
    assert solve_width(renamed, Budget(params_mbit=0.05)).width == 66


@pytest.mark.parametrize(
    ("spec", "shape", "message"),
    [
        (f"{USER_FILE}:nope", SHAPE, "has no attribute 'nope'; callables there: .*make"),
        ("no_such_package.models:make", SHAPE, "cannot import no_such_package.models"),
        ("tests/data/missing.py:make", SHAPE, "no such file"),
        (f"{USER_FILE}:broken", SHAPE, r"calling broken\(width=16\) raised ValueError"),
        (f"{USER_FILE}:not_a_module", SHAPE, "returned int, not a torch.nn.Module"),
        (f"{USER_FILE}:make", (1, 4, 32, 32), "forward failed on input shape 1,4,32,32"),
        (f"{USER_FILE}:make", None, "needs an input shape: --input-shape"),
        (f"{USER_FILE}:", SHAPE, "expected package.module:callable"),
    ],
)
def test_spec_errors_are_one_line_and_name_the_spec(
    spec: str, shape: tuple[int, ...] | None, message: str
) -> None:
    with pytest.raises(SofarError, match=message) as info:
        load_source(spec, None, shape).report()
    assert spec in str(info.value) and "\n" not in str(info.value)


def test_json_form_rebuilds_the_source_as_a_kernel_subprocess_gets_it() -> None:
    user = load_source(f"{USER_FILE}:make", {"width": 8}, SHAPE)
    again = as_source(json.loads(json.dumps(user.to_json())))
    assert again.report("imagenet").summary() == user.report("imagenet").summary()
    preset = load_source("bireal18")
    assert as_source(preset.to_json()) == preset and as_source("bireal18") == preset
