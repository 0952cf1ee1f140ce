"""Exactness of the packed binary kernels against torch on sign tensors (no timing)."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from sofar_cost.errors import SofarError
from sofar_cost.kernels import (
    PackedBinaryConv2d,
    PackedBinaryLinear,
    binary_conv2d,
    kernel_variant,
    measure_popcount_ceiling,
    pack_activations,
    pack_weights,
    popcount_ceilings,
    runnable_variants,
)
from sofar_cost.kernels.bench import (
    ConvShape,
    benchmark_conv,
    best_of_rounds,
    paired_median_ms,
    quartiles,
)
from sofar_cost.kernels.kernel_set import PARALLEL, SERIAL, kernels
from sofar_cost.kernels.popcount import VARIANTS, _xor_popcount_sum, weight_lanes
from sofar_cost.kernels.targets import KERNELS, kernel_env

import background
from background import HASWELL, X86_VARIANTS


def sign(t: torch.Tensor) -> torch.Tensor:
    """The packing's convention: +1 where t >= 0 (incl. -0.0), else -1."""
    return torch.where(t >= 0, 1.0, -1.0)


def reference(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> np.ndarray:
    return torch.nn.functional.conv2d(sign(x), sign(w), stride=stride,
                                      padding=padding).numpy().astype(np.int32)


# (batch, in_ch, out_ch, size, kernel, stride, padding)
CASES = [
    (1, 1, 3, 5, 3, 1, 1),
    (2, 31, 13, 7, 3, 2, 1),
    (1, 41, 9, 1, 3, 1, 1),
    (3, 65, 20, 8, 1, 1, 0),
    (1, 130, 70, 9, 3, 1, 1),
    (2, 53, 17, 7, 3, 1, 0),
    (1, 106, 33, 6, 1, 2, 0),
    (2, 212, 24, 7, 3, 2, 1),
    (1, 64, 136, 14, 3, 2, 1),
    (1, 1, 8, 7, 1, 1, 1),
    (2, 31, 5, 1, 1, 1, 0),
    (1, 7, 6, 9, 7, 2, 3),
    (2, 130, 6, 35, 3, 1, 1),  # 35 x 37 pixels: two chunks of 648, split inside a row
]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("n", "cin", "cout", "size", "k", "stride", "pad"), CASES)
def test_conv_matches_torch(n: int, cin: int, cout: int, size: int, k: int, stride: int,
                            pad: int, memory_format: torch.memory_format) -> None:
    gen = torch.Generator().manual_seed(cin * 1000 + cout)
    x = torch.randn(n, cin, size, size + 1, generator=gen)
    w = torch.randn(cout, cin, k, k, generator=gen)
    layer = PackedBinaryConv2d.from_weight(w, stride, pad)
    out = layer(x.contiguous(memory_format=memory_format))
    np.testing.assert_array_equal(out, reference(x, w, stride, pad))
    assert out.dtype == np.int32


@pytest.mark.parametrize("kernel_hw", [(1, 9), (9, 1)])
def test_nine_taps_that_are_not_a_square(kernel_hw: tuple[int, int]) -> None:
    """The step reads a square kernel's taps rowwise where their offsets run in rows of
    consecutive words: a 1x9 kernel's do (read as three rows of three), a 9x1 kernel's do not
    (read one start per tap). Both exact, in the 3x3 conv's own compiled code (9 taps)."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 70, 12, 13, generator=gen)
    w = torch.randn(10, 70, *kernel_hw, generator=gen)
    out = PackedBinaryConv2d.from_weight(w, 1, 1)(x)
    np.testing.assert_array_equal(out, reference(x, w, 1, 1))


def test_serial_twins_call_serial_twins() -> None:
    """At one thread (the test session's) the layers call the serial twins, which call
    serial twins only: their results are what every other kernel test checks."""
    assert SERIAL.pack_and_conv.py_func.__globals__["conv_kernel"] is SERIAL.conv_kernel
    assert SERIAL.pack_and_conv.py_func.__globals__["pack_into"] is SERIAL.pack_into
    assert SERIAL.pack_into.py_func.__globals__["pack_kernel"] is SERIAL.pack_kernel
    assert SERIAL.affine_pack_kernel.py_func.__globals__["affine_kernel"] is SERIAL.affine_kernel
    assert all(not getattr(SERIAL, f).targetoptions.get("parallel") for f in vars(SERIAL))
    assert kernels() is SERIAL


@pytest.mark.parametrize(("n", "cin", "cout", "size", "k", "stride", "pad"),
                         [CASES[1], CASES[-1]])  # strided; chunks split in a row
def test_parallel_kernels_match_torch(n: int, cin: int, cout: int, size: int, k: int,
                                      stride: int, pad: int, two_threads: None) -> None:
    assert kernels() is PARALLEL
    x = torch.randn(n, cin, size, size + 1, generator=torch.manual_seed(cin))
    w = torch.randn(cout, cin, k, k, generator=torch.manual_seed(cout))
    out = PackedBinaryConv2d.from_weight(w, stride, pad)(x)
    np.testing.assert_array_equal(out, reference(x, w, stride, pad))


def test_channels_last_and_planar_packing_agree() -> None:
    """Both packing kernels, on full and partial words, with -0.0 -> 1 and NaN -> 0."""
    x = torch.randn(2, 130, 5, 9, dtype=torch.float64)
    x[0, 3, 1, 2], x[1, 100, 4, 8] = -0.0, float("nan")
    planar = pack_activations(x, padding=1)
    nhwc = pack_activations(x.contiguous(memory_format=torch.channels_last), padding=1)
    np.testing.assert_array_equal(planar.words, nhwc.words)
    assert planar.interior()[0, 0, 1, 2] >> np.uint64(3) & np.uint64(1) == 1
    assert planar.interior()[1, 1, 4, 8] >> np.uint64(36) & np.uint64(1) == 0


def test_zero_and_negative_zero_are_plus_one() -> None:
    x = torch.tensor([0.0, -0.0, -1e-30, 2.0]).reshape(1, 4, 1, 1)
    w = torch.ones(1, 4, 1, 1)
    assert binary_conv2d(x, w).item() == 2  # +1 +1 -1 +1


def test_packed_input_path_and_repadding() -> None:
    x = torch.randn(2, 70, 6, 6)
    w = torch.randn(12, 70, 3, 3)
    layer = PackedBinaryConv2d.from_weight(w, 1, 1)
    want = reference(x, w, 1, 1)
    np.testing.assert_array_equal(layer.forward_packed(pack_activations(x, 1)), want)
    np.testing.assert_array_equal(layer.forward_packed(pack_activations(x, 0)), want)
    np.testing.assert_array_equal(layer(x.numpy().astype(np.float64)), want)


def test_packing_masks_unused_bits() -> None:
    xp = pack_activations(torch.ones(1, 70, 2, 2), padding=1)
    assert xp.words.shape == (1, 2, 1, 4, 3)  # [N, words, phases, Hq, Wq]: no right border
    assert (xp.words[0, 0, 0, 1:3, 1:3] == np.uint64(2**64 - 1)).all()
    assert (xp.words[0, 1, 0, 1:3, 1:3] == np.uint64(2**6 - 1)).all()
    assert xp.words[0, :, 0, 0].sum() == 0 and xp.words[0, :, 0, :, 0].sum() == 0  # border
    assert pack_activations(torch.ones(1, 70, 2, 2), 1, right=2).words.shape[-1] == 5
    wp = pack_weights(torch.ones(3, 70, 1, 1))
    assert wp.words.shape == (4, 2, 1)  # [cout rounded up to a quad, words, taps]
    assert int(wp.words[1, 1, 0]) == 2**6 - 1 and wp.words[3:].sum() == 0
    assert (wp.pad_terms[0, :3] == -70).all()


def test_stride_phases_hold_every_bordered_pixel_once() -> None:
    x = torch.randn(2, 130, 5, 6)
    plain = pack_activations(x, padding=0)
    strided = pack_activations(x, padding=1, stride=2)
    assert strided.words.shape == (2, 3, 4, 4, 4)  # 7x7 bordered (left only) -> 4 of 4x4
    np.testing.assert_array_equal(strided.interior(), plain.interior())
    np.testing.assert_array_equal(plain.with_layout(1, 2).words, strided.words)


@pytest.mark.parametrize(("n", "fin", "fout"), [(1, 1, 1), (5, 106, 33), (3, 512, 1000)])
def test_linear_matches_torch(n: int, fin: int, fout: int) -> None:
    x, w = torch.randn(n, fin), torch.randn(fout, fin)
    out = PackedBinaryLinear.from_weight(w)(x)
    np.testing.assert_array_equal(out, (sign(x) @ sign(w).T).numpy().astype(np.int32))


def test_from_module() -> None:
    conv = torch.nn.Conv2d(41, 10, 3, stride=2, padding=1, bias=False)
    x = torch.randn(1, 41, 9, 9)
    np.testing.assert_array_equal(PackedBinaryConv2d.from_module(conv)(x),
                                  reference(x, conv.weight.detach(), 2, 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groups": 2}, "layer1.conv: groups=2"),
        ({"dilation": 2}, "layer1.conv: dilation=2"),
        ({"stride": (1, 2)}, "layer1.conv: stride="),
        ({"padding": "same"}, "layer1.conv: padding='same'"),
        ({"padding_mode": "reflect", "padding": 1}, "padding_mode='reflect'"),
    ],
)
def test_unsupported_configs_raise(kwargs: dict, match: str) -> None:
    w = torch.randn(8, 16, 3, 3)
    with pytest.raises(ValueError, match=match):
        PackedBinaryConv2d.from_weight(w, name="layer1.conv", **kwargs)


def test_wrong_input_channels_raise() -> None:
    layer = PackedBinaryConv2d.from_weight(torch.randn(8, 16, 3, 3), name="c")
    with pytest.raises(ValueError, match="c: expected input"):
        layer(torch.randn(1, 15, 4, 4))


def test_output_buffer_is_reused_or_refused() -> None:
    """``out`` (a layer's own output buffer) is written again; one of another shape,
    dtype or layout is refused, naming what would do."""
    w = torch.randn(8, 16, 3, 3)
    layer = PackedBinaryConv2d.from_weight(w, padding=1, name="c")
    x, y = torch.randn(2, 16, 6, 7), torch.randn(2, 16, 6, 7)
    out = layer.accumulate(x)
    got = layer(y, out)
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(got, reference(y, w, 1, 1))
    for wrong in (out[:1], out.astype(np.int64), np.asfortranarray(out)):
        with pytest.raises(ValueError, match=r"c: out must be a C-contiguous int32 array"):
            layer(y, wrong)


def test_variant_ceiling_and_benchmark_api() -> None:
    assert kernel_variant() == runnable_variants()[0]
    assert set(runnable_variants()) <= set(VARIANTS)
    assert measure_popcount_ceiling(seconds=0.05) > 0
    result = benchmark_conv(ConvShape("tiny", 8, 8, 6, 6), threads=1, repeat=3)
    for key in ("name", "binary_macs", "ms_xnor", "ms_torch_fp32", "gmacs_per_s", "speedup",
                "ms_xnor_iqr", "ms_torch_fp32_iqr", "speedup_iqr"):
        assert key in result
    assert result["binary_macs"] == 8 * 8 * 36 * 9
    q1, q3 = result["speedup_iqr"]
    assert q1 <= q3


def test_every_runnable_variant_counts_exactly() -> None:
    """The ceiling benchmark's block is each variant's counting code (the convolution
    step's, for ``avx2-carry-save`` the carry-save tree and nibble lookup): its total must be
    the true popcount sum, for every variant this CPU can run, in this process."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**64, size=2 * 72, dtype=np.uint64)
    a[:9] = np.uint64(2**64 - 1)  # full words: byte counts at their largest
    for variant in runnable_variants():
        m = rng.integers(0, 2**64, size=4, dtype=np.uint64)
        want = sum(int(np.bitwise_count(a ^ mj).sum()) for mj in m)
        got = _xor_popcount_sum(variant)(a.copy(), np.repeat(m, weight_lanes(variant)), 1)
        assert got == want, variant
    assert set(popcount_ceilings(seconds=0.02)) == set(runnable_variants())


def test_paired_timing_interleaves_and_reports_spread() -> None:
    calls: list[str] = []
    timed = paired_median_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                             rounds=4, warmup=1)
    assert calls[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # rotated order per round
    for summary in timed.values():
        assert len(summary["rounds_ms"]) == 4
        assert summary["min_ms"] <= summary["q1_ms"] <= summary["median_ms"]
        assert summary["median_ms"] <= summary["q3_ms"] <= summary["max_ms"]
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 4.0)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        paired_median_ms({"a": lambda: None}, rounds=0)


def test_kernel_choice_errors_and_targets() -> None:
    with pytest.raises(SofarError, match="unknown kernel 'neon'"):
        kernel_env("neon")
    assert kernel_env("auto") is None
    for kernel, variant in KERNELS.items():
        if variant in runnable_variants() and variant != kernel_variant():
            env = kernel_env(kernel)
            features = set(env["NUMBA_CPU_FEATURES"].split(","))
            assert "+avx512f" not in features and env["NUMBA_CACHE_DIR"]


def test_best_of_rounds_keeps_each_sides_best_and_recomputes_rates() -> None:
    row = {"name": "l", "threads": 2, "binary_macs": 10**6}
    slow_xnor = {**row, "ms_xnor_nchw": 4.0, "ms_xnor_channels_last": 3.0,
                 "ms_torch_nchw": 20.0, "ms_torch_channels_last": 30.0}
    slow_torch = {**row, "ms_xnor_nchw": 2.0, "ms_xnor_channels_last": 5.0,
                  "ms_torch_nchw": 40.0, "ms_torch_channels_last": 25.0}
    best = best_of_rounds([slow_xnor, slow_torch])
    assert (best["ms_xnor"], best["ms_torch_fp32"]) == (2.0, 20.0)
    assert best["speedup"] == 10.0 and best["gmacs_per_s"] == 10**6 / 2.0 / 1e6
    assert best["rounds"] == 2


def x86_variants_runnable() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64") and background.host_has(HASWELL)


@pytest.mark.slow
@pytest.mark.skipif(not x86_variants_runnable(), reason="needs an x86-64 CPU with AVX2")
def test_x86_variants_match_torch() -> None:
    """The variants for CPUs without vector popcount, compiled for Haswell (AVX2) and Sandy
    Bridge (no AVX2) in subprocesses with their own fresh Numba caches, so that machines with
    AVX-512 test them too: exact against torch on 3x3, 7x7 (49 taps: two carry-save trees)
    and 1x1 layers, and no AVX-512 instruction in the generated code. ``conftest.py`` starts
    them when the tests are collected (``background.start_x86_variant_checks``), so their
    compiles overlap the other tests."""
    background.start_x86_variant_checks()  # no-op when the collection started them
    for _, _, variant in X86_VARIANTS:
        code, stderr = background.outcome(f"x86 {variant}")
        assert code == 0, f"{variant}: {stderr[-2000:]}"


@pytest.mark.slow
def test_layer_call_from_a_cache_built_in_steps() -> None:
    """A layer call (``pack_and_conv``) as the first parallel code of a process, loaded from a
    fresh Numba cache that first got the kernels alone, then the layer compiled from them:
    exact, no crash (it segfaulted before ``_conv_kernel`` started the threading layer at
    import). Three processes in a row, started by ``conftest.py`` in the background."""
    background.start_cached_caller_check()  # no-op when the collection started it
    code, stderr = background.outcome("cached caller")
    assert code == 0, stderr[-2000:]
