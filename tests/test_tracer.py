"""Tracer: exact counts against hand counts, Larq's summary, fvcore, and user binary layers."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from sofar_cost import tracer
from sofar_cost.binary import BinaryConv2d, register_binary_layer, set_binarization, sign
from sofar_cost.counting import CountOptions
from sofar_cost.models import create_model
from sofar_cost.tracer import parameter_counts, trace
from tests.conftest import cost

import background


def test_bireal18_imagenet_exact_integers() -> None:
    report = cost("bireal18")
    assert report.binary_params == 10_985_472
    assert report.fp_params == 693_440
    assert report.binary_macs == 1_676_279_808
    assert report.fp_macs == 137_793_536
    assert report.params_mbit == pytest.approx(33.175552)
    assert report.flops == 163_985_408


def test_rf_c4d8_37_imagenet_exact_integers() -> None:
    report = cost("rf-c4d8-37")
    assert (report.fp_params, report.binary_params) == (404_629, 19_289_475)
    assert (report.fp_macs, report.binary_macs) == (83_838_112, 2_846_672_640)


def test_bireal18_cifar100_exact_integers() -> None:
    report = cost("bireal18", "cifar100")
    assert (report.fp_params, report.binary_params) == (224_960, 10_985_472)
    assert (report.fp_macs, report.binary_macs) == (8_112_128, 547_356_672)


def test_bireal18_without_binarization_is_standard_resnet18() -> None:
    with torch.device("meta"):
        model = set_binarization(create_model("bireal18"), False)
    report = trace(model, (1, 3, 224, 224))
    assert report.binary_macs == 0 and report.binary_params == 0
    assert report.fp_macs == 1_814_073_344
    everything = CountOptions(bias_params=True, batchnorm_params=True)
    assert sum(parameter_counts(model, everything)) == 11_689_512
    assert trace(model, (1, 3, 224, 224), everything).fp_params == 11_689_512


def _fvcore_macs(model: nn.Module, x: torch.Tensor) -> int:
    """fvcore counting only convs and matmuls (a handle returning Counter() silences an op)."""
    analysis = FlopCountAnalysis(model.eval(), x)
    for op in ["aten::batch_norm", "aten::adaptive_avg_pool2d", "aten::max_pool2d",
               "aten::avg_pool2d", "aten::add", "aten::mean", "aten::relu_", "aten::relu",
               "aten::cat", "aten::stack", "aten::slice", "aten::where", "aten::ge"]:  # fmt: skip
        analysis.set_op_handle(op, lambda *_: Counter())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return int(analysis.total())


@pytest.mark.parametrize("name", ["bireal18", "rf-c3d4-21",  # fvcore runs DenseNets slowly
                                  pytest.param("bdn51", marks=pytest.mark.slow),
                                  pytest.param("drf-c2d2-51", marks=pytest.mark.slow)])
def test_full_precision_models_agree_with_fvcore(name: str) -> None:
    torch.manual_seed(0)
    model = set_binarization(create_model(name, "cifar100"), False)
    x = torch.randn(1, 3, 16, 16)  # a small input (global pool): fvcore runs the model on CPU
    ours = trace(model, tuple(x.shape))
    assert ours.binary_macs == 0
    assert ours.fp_macs == _fvcore_macs(model, x)
    # the binary model does the same multiplications, only split by precision
    with torch.device("meta"):
        binary = trace(create_model(name, "cifar100"), tuple(x.shape))
    assert binary.binary_macs > 0
    assert binary.fp_macs + binary.binary_macs == ours.fp_macs


class MarkedBinaryConv(nn.Conv2d):
    """A user's binary conv: hides its sign op behind x + (sign(x) - x).detach()."""

    sofar_binary = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x + (sign(x) - x).detach()
        wb = self.weight + (sign(self.weight) - self.weight).detach()
        return self._conv_forward(xb, wb, self.bias)


class PlainSubclassConv(nn.Conv2d):
    """Not binary: a Conv2d subclass must still be counted (ptflops/thop drop it)."""


def _user_net(conv_cls: type[nn.Conv2d]) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        conv_cls(8, 16, 3, padding=1, bias=False),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


def test_user_marked_binary_layer() -> None:
    report = trace(_user_net(MarkedBinaryConv), (1, 3, 8, 8))
    assert report.binary_params == 8 * 16 * 9
    assert report.binary_macs == 8 * 16 * 9 * 64
    assert report.fp_params == 3 * 8 * 9 + 16 * 64 * 10
    assert report.fp_macs == 3 * 8 * 9 * 64 + 16 * 64 * 10


def test_registered_user_layer_and_unregistered_subclass() -> None:
    plain = trace(_user_net(PlainSubclassConv), (1, 3, 8, 8))
    assert plain.binary_macs == 0
    assert plain.fp_macs == 3 * 8 * 9 * 64 + 8 * 16 * 9 * 64 + 16 * 64 * 10

    @register_binary_layer
    class RegisteredConv(nn.Conv2d):
        pass

    registered = trace(_user_net(RegisteredConv), (1, 3, 8, 8))
    assert registered.binary_macs == 8 * 16 * 9 * 64
    with pytest.raises(TypeError):
        register_binary_layer(int)  # type: ignore[arg-type]


def test_functional_conv_inside_a_binary_module_is_binary() -> None:
    class Functional(nn.Module):
        sofar_binary = True

        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 2, 3, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(sign(x), sign(self.weight), padding=1)

    report = trace(Functional(), (1, 2, 5, 5))
    assert report.binary_params == 72 and report.binary_macs == 72 * 25


def test_optional_categories() -> None:
    base = cost("rf-c3d4-21", "cifar100")
    with torch.device("meta"):
        model = create_model("rf-c3d4-21", "cifar100")
    shape = (1, 3, 32, 32)
    for flag in ("batchnorm", "pooling", "elementwise"):
        report = trace(model, shape, CountOptions(**{flag: True}))
        assert report.fp_other_ops > 0, flag
        assert report.flops == base.flops + report.fp_other_ops
    # 7 residual additions + a 3-way join per block: every output element once per add
    elementwise = trace(model, shape, CountOptions(elementwise=True)).fp_other_ops
    assert elementwise > 0
    with_bias = trace(model, shape, CountOptions(bias_params=True))
    assert with_bias.fp_params == base.fp_params + 100  # the classifier's bias


def test_per_layer_rows_sum_to_totals() -> None:
    report = cost("bireal18")
    rows = report.layer_rows()
    assert sum(r["binary_macs"] for r in rows) == report.binary_macs
    binary_rows = [r for r in rows if r["binary"]]
    assert len(binary_rows) == 16
    stem = next(r for r in rows if r["name"] == "stem.0")
    assert stem["fp_macs"] == 118_013_952 and stem["output_shape"] == (1, 64, 112, 112)


def test_peak_activation_memory_is_plausible() -> None:
    report = cost("bireal18")
    stem_output = 64 * 112 * 112 * 4
    assert stem_output < report.peak_activation_bytes < 4 * stem_output


def test_trace_restores_training_mode_and_works_on_cpu() -> None:
    model = create_model("rf-c3d4-21", "cifar100", width=8).train()
    report = trace(model, (1, 3, 32, 32))
    assert model.training
    assert report.binary_macs == cost("rf-c3d4-21", "cifar100", 8).binary_macs
    assert isinstance(model.stages[0][0].column.conv, BinaryConv2d)


@pytest.mark.slow  # a fresh Python process importing torch
def test_trace_does_not_import_dynamo() -> None:
    """``compare``'s start-up: a fresh process traces without the ~2 s ``torch._dynamo`` import
    (see sofar_cost.dynamo_free) or sympy (tracer._run_meta_op), and hands over to torch's
    disabler once dynamo is loaded. ``conftest.py`` starts the process when the tests are
    collected (tests/background.py)."""
    background.start_no_dynamo_check()  # no-op when the collection started it
    code, stderr = background.outcome("no dynamo")
    assert code == 0, stderr[-2000:]


@pytest.mark.parametrize("name", ["bireal18", "binarydensenet28", "quicknet-small", "drf-c2d2"])
def test_meta_ops_run_as_torchs_own_meta_functions(name: str, monkeypatch) -> None:
    """On meta, ops run over zero-stride CPU stand-ins (tracer._run_meta_op): every count and
    output shape equals a trace through torch's own meta functions, and so does the activation
    peak, but for eval BatchNorm's two empty statistics outputs, which torch's Python meta
    function sizes per channel (its CPU kernel, as here, leaves them empty)."""
    with torch.device("meta"):
        model = create_model(name, "imagenet", 8)
    ours = trace(model, (1, 3, 64, 64))
    monkeypatch.setattr(tracer, "_run_meta_op", lambda func, args, kwargs: func(*args, **kwargs))
    torchs = trace(model, (1, 3, 64, 64))
    assert ours.layer_rows() == torchs.layer_rows()
    assert ours.peak_activation_bytes == pytest.approx(torchs.peak_activation_bytes, rel=1e-2)
