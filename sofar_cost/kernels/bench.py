"""Benchmark API: packed binary conv vs torch float32 conv2d on the same layer shapes.

Used by ``benchmarks/bench_kernels.py`` and the CLI. Timings are medians over ``repeat``
runs after warm-up; the packed timing includes packing the float input. Thread counts are
set for Numba and torch together and restored afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numba
import numpy as np
import torch
from rich.progress import Progress

from .conv import PackedBinaryConv2d

__all__ = [
    "BIREAL18_SHAPES",
    "BIREAL18_STRIDE2_SHAPES",
    "ConvShape",
    "benchmark_conv",
    "benchmark_layers",
    "best_of_rounds",
    "median_ms",
    "paired_times_ms",
    "thread_count",
]


@dataclass(frozen=True)
class ConvShape:
    """One conv layer to benchmark (square kernel, stride and padding)."""

    name: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    batch: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.height + 2 * p - k) // s + 1, (self.width + 2 * p - k) // s + 1

    @property
    def binary_macs(self) -> int:
        out_h, out_w = self.out_hw
        k2 = self.kernel_size**2
        return self.batch * self.out_channels * out_h * out_w * self.in_channels * k2


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



def paired_times_ms(
    runs: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 2,
    budget_s: float | None = None,
) -> dict[str, list[float]]:
    """Wall time (ms) of each side in every round; the sides take turns within a round
    (the first one rotates), so the machine's drift hits them alike and one run's ratio
    can be trusted. With ``budget_s`` the rounds shrink (to at least 3) to stay near it."""
    once = {}
    for name, fn in runs.items():
        for _ in range(max(1, warmup)):
            start = time.perf_counter()
            fn()
            once[name] = time.perf_counter() - start
    if budget_s is not None:
        rounds = min(rounds, max(3, int(budget_s / max(sum(once.values()), 1e-9))))
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    return times

def benchmark_conv(shape: ConvShape, threads: int = 1, repeat: int = 20) -> dict:
    """Time the packed kernel (input packing included) and torch fp32 on ``shape``.

    Both sides get their input as NCHW and as channels_last (converted before timing) and
    keep the better: ``ms_xnor`` and ``ms_torch_fp32``. ``speedup`` is
    ``ms_torch_fp32 / ms_xnor``; ``gmacs_per_s`` counts binary MACs of the packed kernel.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.batch, shape.in_channels, shape.height, shape.width, generator=gen)
    k = shape.kernel_size
    w = torch.randn(shape.out_channels, shape.in_channels, k, k, generator=gen)
    layer = PackedBinaryConv2d.from_weight(w, shape.stride, shape.padding, name=shape.name)
    x_np = x.numpy()
    x_cl = x.contiguous(memory_format=torch.channels_last)
    w_cl = w.contiguous(memory_format=torch.channels_last)

    def conv(inp: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(inp, weight, stride=shape.stride,
                                          padding=shape.padding)

    with thread_count(threads), torch.inference_mode():
        ms_xnor_nchw = median_ms(lambda: layer(x_np), repeat)
        ms_xnor_cl = median_ms(lambda: layer(x_cl), repeat)
        ms_nchw = median_ms(lambda: conv(x, w), repeat)
        ms_cl = median_ms(lambda: conv(x_cl, w_cl), repeat)
    return _with_rates({
        **asdict(shape),
        "threads": threads,
        "binary_macs": shape.binary_macs,
        "ms_xnor_nchw": ms_xnor_nchw,
        "ms_xnor_channels_last": ms_xnor_cl,
        "ms_torch_nchw": ms_nchw,
        "ms_torch_channels_last": ms_cl,
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
                     progress: bool = True) -> list[dict]:
    """:func:`benchmark_conv` over ``shapes``, with a rich progress bar if ``progress``."""
    results = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"benchmarking ({threads} thread(s))", total=len(shapes))
        for shape in shapes:
            bar.update(task, description=f"{shape.name} ({threads} thread(s))")
            results.append(benchmark_conv(shape, threads, repeat))
            bar.advance(task)
    return results
