"""Benchmark API: packed binary conv vs torch float32 conv2d on the same layer shapes.

Used by ``benchmarks/bench_kernels.py`` and the CLI. The two sides are timed in interleaved
rounds (:func:`paired_median_ms`): on a shared VM whose speed drifts by up to 1.8x within
seconds, both sides then see the same drift, so one run's ratio can be trusted, and the
spread over rounds (quartiles) says how far. The packed timing includes packing the float
input. Thread counts are set for Numba and torch together and restored afterwards.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import llvmlite.binding as llvm
import numba
import numpy as np
import torch
from rich.progress import Progress

from .conv import PackedBinaryConv2d
from .popcount import ceiling_work, cpu_features, kernel_variant, popcount_ceilings

__all__ = [
    "BIREAL18_SHAPES",
    "BIREAL18_STRIDE2_SHAPES",
    "ConvShape",
    "benchmark_conv",
    "benchmark_layers",
    "best_of_rounds",
    "cpu_info",
    "kernel_report",
    "median_ms",
    "paired_median_ms",
    "paired_times_ms",
    "quartiles",
    "thread_count",
]


@dataclass(frozen=True)
class ConvShape:
    """One conv layer to benchmark: a k x k (or kh x kw) kernel, one stride and padding."""

    name: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel_size: int | tuple[int, int] = 3
    stride: int = 1
    padding: int = 1
    batch: int = 1

    @property
    def kernel_hw(self) -> tuple[int, int]:
        k = self.kernel_size
        return (k, k) if isinstance(k, int) else (k[0], k[1])

    @property
    def out_hw(self) -> tuple[int, int]:
        (kh, kw), s, p = self.kernel_hw, self.stride, self.padding
        return (self.height + 2 * p - kh) // s + 1, (self.width + 2 * p - kw) // s + 1

    @property
    def binary_macs(self) -> int:
        out_h, out_w = self.out_hw
        kh, kw = self.kernel_hw
        return self.batch * self.out_channels * out_h * out_w * self.in_channels * kh * kw


# The binary 3x3 convolutions of Bi-Real ResNet-18 on ImageNet (batch 1).
BIREAL18_SHAPES = [
    ConvShape("bireal18 64ch 56x56", 64, 64, 56, 56),
    ConvShape("bireal18 128ch 28x28", 128, 128, 28, 28),
    ConvShape("bireal18 256ch 14x14", 256, 256, 14, 14),
    ConvShape("bireal18 512ch 7x7", 512, 512, 7, 7),
]
BIREAL18_STRIDE2_SHAPES = [
    ConvShape("bireal18 64->128 s2 56->28", 64, 128, 56, 56, stride=2),
    ConvShape("bireal18 128->256 s2 28->14", 128, 256, 28, 28, stride=2),
    ConvShape("bireal18 256->512 s2 14->7", 256, 512, 14, 14, stride=2),
]


@contextmanager
def thread_count(n: int) -> Iterator[None]:
    """Run Numba and torch with ``n`` threads, restoring both afterwards."""
    old_numba, old_torch = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(n)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old_numba)
        torch.set_num_threads(old_torch)


def median_ms(
    fn: Callable[[], object], repeat: int, warmup: int = 3, budget_s: float | None = None
) -> float:
    """Median wall time of ``fn()`` in ms after ``warmup`` calls.

    With ``budget_s``, slow functions (a 149-layer net in simulated-binary torch) get fewer
    repeats, at least 3, so one measurement stays within about that many seconds.
    """
    for _ in range(max(1, warmup)):
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
    if budget_s is not None:
        repeat = min(repeat, max(3, int(budget_s / max(once, 1e-9))))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile: the spread :func:`paired_median_ms` reports."""
    q1, q3 = np.percentile(np.asarray(values, dtype=float), [25, 75])
    return float(q1), float(q3)


def paired_times_ms(
    fns: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 2,
    min_round_s: float = 0.0, budget_s: float | None = None,
) -> dict[str, list[float]]:
    """Each function's time (ms) in every round of interleaved rounds.

    Each round calls every function once, in an order rotated by one per round, so that
    no side always runs first (after the other's cache footprint) and slow phases of a
    drifting machine fall on all sides alike: one run's ratio can be trusted. With
    ``min_round_s``, a function whose call is shorter is called several times per round (the
    same number every round) and the round's time is their mean. With ``budget_s`` the
    rounds shrink (to at least 3) to stay near that many seconds.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    names = list(fns)
    once: dict[str, float] = {}
    calls: dict[str, int] = {}
    for name in names:
        for _ in range(max(1, warmup)):
            start = time.perf_counter()
            fns[name]()
            once[name] = time.perf_counter() - start
        calls[name] = max(1, int(min_round_s / max(once[name], 1e-9)))
    if budget_s is not None:
        per_round = sum(once[name] * calls[name] for name in names)
        rounds = min(rounds, max(3, int(budget_s / max(per_round, 1e-9))))
    each: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn, n = fns[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            each[name].append(1e3 * (time.perf_counter() - start) / n)
    return each


def paired_median_ms(fns: Mapping[str, Callable[[], object]], rounds: int,
                     warmup: int = 2, min_round_s: float = 0.0) -> dict[str, dict[str, Any]]:
    """:func:`paired_times_ms`, summarised per name: ``median_ms``, ``q1_ms``, ``q3_ms``
    (quartiles), ``min_ms``, ``max_ms`` and ``rounds_ms`` (each round's time, in round
    order, so that per-round ratios of two sides can be formed, see :func:`quartiles`)."""
    summary = {}
    for name, times in paired_times_ms(fns, rounds, warmup, min_round_s).items():
        q1, q3 = quartiles(times)
        summary[name] = {"median_ms": float(np.median(times)), "q1_ms": q1, "q3_ms": q3,
                         "min_ms": min(times), "max_ms": max(times), "rounds_ms": times}
    return summary


def benchmark_conv(shape: ConvShape, threads: int = 1, repeat: int = 20,
                   ceilings: Sequence[str] = ()) -> dict:
    """Time the packed kernel (input packing included) and torch fp32 on ``shape``, in
    ``repeat`` interleaved rounds (:func:`paired_median_ms`). The packed layer writes into
    one output buffer, reused as the engine reuses its buffers: a new 0.8 MB array per call
    (56x56x64), written after other work, measured 0.06-0.12 ms more on the AVX2 path
    (0.62-0.67 against 0.55-0.56 ms, Zen 4): cache misses of fresh memory, not the kernel.

    Both sides get their input as NCHW and as channels_last (converted before timing) and
    keep the better median: ``ms_xnor`` and ``ms_torch_fp32``. ``speedup`` is
    ``ms_torch_fp32 / ms_xnor``; ``gmacs_per_s`` counts binary MACs of the packed kernel.
    The spread: ``ms_xnor_iqr`` and ``ms_torch_fp32_iqr`` are the quartiles of each round's
    better layout, ``speedup_iqr`` those of the per-round ratio torch / xnor.

    For each popcount variant in ``ceilings``, the one-thread ceiling loop of about the
    layer's MACs runs in the same rounds (:func:`.popcount.ceiling_work`):
    ``paired_ceiling_fraction[variant]`` is the median over rounds of the layer's rate over
    that round's ceiling rate per thread used, ``paired_ceiling_fraction_iqr[variant]`` its
    quartiles (ceilings timed apart move with the machine's drift: 0.66-0.98x were seen for
    one layer on one day).
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.batch, shape.in_channels, shape.height, shape.width, generator=gen)
    w = torch.randn(shape.out_channels, shape.in_channels, *shape.kernel_hw, generator=gen)
    layer = PackedBinaryConv2d.from_weight(w, shape.stride, shape.padding, name=shape.name)
    x_np = x.numpy()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w_cl = w.contiguous(memory_format=torch.channels_last)

    def conv(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(inp, weight, stride=shape.stride,
                                          padding=shape.padding)

    work = {v: ceiling_work(shape.binary_macs, v) for v in ceilings}
    with thread_count(threads), torch.inference_mode():
        out = layer.accumulate(x_np)  # the output buffer both layouts' calls reuse
        timed = paired_median_ms({
            "ms_xnor_nchw": lambda: layer(x_np, out),
            "ms_xnor_channels_last": lambda: layer(x_cl, out),
            "ms_torch_nchw": lambda: conv(x, w),
            "ms_torch_channels_last": lambda: conv(x_cl, w_cl),
            **{f"ceiling {v}": run for v, (run, _) in work.items()},
        }, repeat, min_round_s=0.002)  # fmt: skip
    xnor = np.minimum(timed["ms_xnor_nchw"]["rounds_ms"],
                      timed["ms_xnor_channels_last"]["rounds_ms"])
    fp32 = np.minimum(timed["ms_torch_nchw"]["rounds_ms"],
                      timed["ms_torch_channels_last"]["rounds_ms"])
    fractions = {v: (shape.binary_macs / xnor) * np.array(timed[f"ceiling {v}"]["rounds_ms"])
                 / (done * threads) for v, (_, done) in work.items()}
    for v in work:
        del timed[f"ceiling {v}"]
    return _with_rates({
        **asdict(shape),
        "threads": threads,
        "binary_macs": shape.binary_macs,
        **{key: t["median_ms"] for key, t in timed.items()},
        "paired_rounds": repeat,
        "ms_xnor_iqr": quartiles(xnor),
        "ms_torch_fp32_iqr": quartiles(fp32),
        "speedup_iqr": quartiles(fp32 / xnor),
        **({"paired_ceiling_fraction": {v: float(np.median(f)) for v, f in fractions.items()},
            "paired_ceiling_fraction_iqr": {v: quartiles(f) for v, f in fractions.items()}}
           if fractions else {}),
    })


def _with_rates(row: dict) -> dict:
    """Add the better layout's times and the rates derived from them to a timing row."""
    ms_xnor = min(row["ms_xnor_nchw"], row["ms_xnor_channels_last"])
    ms_torch = min(row["ms_torch_nchw"], row["ms_torch_channels_last"])
    return {
        **row,
        "ms_xnor": ms_xnor,
        "ms_torch_fp32": ms_torch,
        "gmacs_per_s": row["binary_macs"] / ms_xnor / 1e6,
        "torch_gflops": 2 * row["binary_macs"] / ms_torch / 1e6,
        "speedup": ms_torch / ms_xnor,
    }


def best_of_rounds(rounds: Sequence[dict]) -> dict:
    """One row from repeated :func:`benchmark_conv` rows of the same layer and thread count:
    each side's lowest median, so that a round disturbed by other load on the machine
    (seen on a 2-core VM: whole rounds in which two threads ran no faster than one) counts
    for neither side."""
    times = ("ms_xnor_nchw", "ms_xnor_channels_last", "ms_torch_nchw", "ms_torch_channels_last")
    rounds = [_with_rates(r) for r in rounds]
    best = {**rounds[0], **{key: min(r[key] for r in rounds) for key in times}}
    best["rounds"] = len(rounds)
    best["ms_xnor_each_round"] = [r["ms_xnor"] for r in rounds]
    best["ms_torch_fp32_each_round"] = [r["ms_torch_fp32"] for r in rounds]
    return _with_rates(best)


def benchmark_layers(shapes: Sequence[ConvShape], threads: int = 1, repeat: int = 20,
                     progress: bool = True, ceilings: Sequence[str] = ()) -> list[dict]:
    """:func:`benchmark_conv` over ``shapes``, with a rich progress bar if ``progress``."""
    results = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"benchmarking ({threads} thread(s))", total=len(shapes))
        for shape in shapes:
            bar.update(task, description=f"{shape.name} ({threads} thread(s))")
            results.append(benchmark_conv(shape, threads, repeat, ceilings))
            bar.advance(task)
    return results


def cpu_info() -> dict:
    """Model name, core count and the SIMD features (of the compile target) that matter
    for the variant choice."""
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    interesting = ("popcnt", "avx2", "avx512f", "avx512vpopcntdq")
    return {
        "model": model,
        "llvm_cpu": numba.config.CPU_NAME or llvm.get_host_cpu_name(),
        "features_overridden": numba.config.CPU_FEATURES is not None,
        "logical_cpus": os.cpu_count(),
        "features": sorted(f for f in cpu_features() if f in interesting),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numba": numba.__version__,
    }


def kernel_report(thread_counts: list[int], repeat: int, ceiling_seconds: float, rounds: int,
                  shapes: Sequence[ConvShape] | None = None, progress: bool = True) -> dict:
    """The kernel benchmark of ``benchmarks/bench_kernels.py`` (JSON-able): ``rounds``
    passes over every thread count and shape, each row keeping each side's best round
    (:func:`best_of_rounds`), with every runnable variant's popcount ceiling measured before
    each pass (the best of them), and each row's rate as a percentage of the kernel's own
    ceiling and of the ``scalar-popcnt`` one (per thread used)."""
    shapes = list(BIREAL18_SHAPES + BIREAL18_STRIDE2_SHAPES if shapes is None else shapes)
    passes: dict[tuple[str, int], list[dict]] = {}
    ceilings: dict[str, float] = {}
    for _ in range(rounds):
        with thread_count(1):  # in every pass, each variant keeps its best (as the rows do)
            for v, g in popcount_ceilings(ceiling_seconds).items():
                ceilings[v] = max(g, ceilings.get(v, 0.0))
        for n in thread_counts:
            for row in benchmark_layers(shapes, threads=n, repeat=repeat, progress=progress):
                passes.setdefault((row["name"], n), []).append(row)
    own, scalar = ceilings[kernel_variant()], ceilings.get("scalar-popcnt")
    rows = [best_of_rounds(found) for found in passes.values()]
    one = {r["name"]: r["ms_xnor"] for r in rows if r["threads"] == 1}
    for r in rows:
        r["pct_of_ceiling"] = 100 * r["gmacs_per_s"] / (own * r["threads"])
        if scalar is not None:
            r["pct_of_scalar_ceiling"] = 100 * r["gmacs_per_s"] / (scalar * r["threads"])
        if r["name"] in one:
            r["scaling_vs_1_thread"] = one[r["name"]] / r["ms_xnor"]
    return {
        "cpu": cpu_info(),
        "variant": kernel_variant(),
        "popcount_ceiling_gmacs_per_s_1_thread": own,
        "popcount_ceilings": ceilings,
        "repeat": repeat,
        "rounds": rounds,
        "results": rows,
    }
