"""How close the packed conv runs to the scalar-popcnt ceiling, and what a layer call adds.

All in the same interleaved rounds as the ceiling loop (``popcount.ceiling_work``), one
thread, this process's kernel variant (run it in the environment of
``sofar_cost.kernels.targets.kernel_env("avx2")`` for the AVX2 path):

- the convolution kernel alone on packed input, 3x3 C -> C convs of several plane sizes
  (small planes waste the 2 padding columns each output row computes: 2/9 at 7x7);
- for one shape (``--layer``), what a layer call adds: packing its float input
  (``pack_and_conv``, NCHW and channels-last) and a new output array per call
  (``PackedBinaryConv2d.__call__``);
- the ceiling loop of the kernel's own popcount variant (not ``scalar-popcnt``): how far
  its way of counting can go past the scalar ceiling in the same rounds, which bounds
  every conv's row.

    python benchmarks/conv_efficiency.py [--rounds 30] [--layer 64 56]

Prints each one's rate as a multiple of the scalar ceiling (median over rounds, quartiles).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numba
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from sofar_cost.kernels import PackedBinaryConv2d, kernel_variant
from sofar_cost.kernels.bench import paired_times_ms, quartiles
from sofar_cost.kernels.kernel_set import kernels
from sofar_cost.kernels.packing import pack_activations
from sofar_cost.kernels.popcount import ceiling_work

PLANES = [(64, 56), (128, 56), (128, 28), (256, 28), (256, 14), (512, 14), (512, 7), (64, 14)]


def conv_calls(channels: int, size: int, layer_calls: bool) -> tuple[dict[str, Callable], int]:
    """({label: call}, binary MACs) of a 3x3 stride-1 conv on a size x size plane."""
    gen = torch.Generator().manual_seed(channels * 100 + size)
    layer = PackedBinaryConv2d.from_weight(torch.randn(channels, channels, 3, 3, generator=gen),
                                           stride=1, padding=1)
    x = torch.randn(1, channels, size, size, generator=gen)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    plan = layer._plan_for(size, size)
    packed = pack_activations(x).with_layout(*plan.layout)
    out = layer.empty_output(1, plan)
    args = plan.kernel_args(layer._kernel_weights, out)
    k = kernels()
    label = f"{channels}ch {size}x{size}"
    calls = {f"conv {label}": lambda: k.conv_kernel(packed.buffer, packed.plane_words, *args)}
    if layer_calls:
        nhwc = x_cl.permute(0, 2, 3, 1).numpy()
        calls |= {
            f"packing (NCHW) + conv {label}": lambda: k.pack_and_conv(
                x.numpy(), False, *plan.layout[:2], *plan.phase_shape, *args),
            f"packing (NHWC) + conv {label}": lambda: k.pack_and_conv(
                nhwc, True, *plan.layout[:2], *plan.phase_shape, *args),
            f"layer call, new output {label}": lambda: layer(x_cl),
        }
    return calls, channels * channels * 9 * size * size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--layer", type=int, nargs=2, default=[64, 56],
                        metavar=("CHANNELS", "SIZE"))
    args = parser.parse_args()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    fns: dict[str, Callable] = {}
    macs: dict[str, int] = {}
    for channels, size in PLANES:
        calls, n = conv_calls(channels, size, [channels, size] == args.layer)
        fns |= calls
        macs |= dict.fromkeys(calls, n)
    if list(args.layer) not in [list(p) for p in PLANES]:
        calls, n = conv_calls(*args.layer, True)
        fns |= calls
        macs |= dict.fromkeys(calls, n)
    run, done = ceiling_work(1e8, "scalar-popcnt")
    fns["ceiling"] = run
    if kernel_variant() != "scalar-popcnt":  # what this variant's counting itself reaches
        own, macs[f"ceiling loop {kernel_variant()}"] = ceiling_work(1e8)
        fns[f"ceiling loop {kernel_variant()}"] = own
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        bar.add_task(f"{len(fns)} calls in {args.rounds} interleaved rounds")
        seconds = {name: np.array(ms) / 1e3
                   for name, ms in paired_times_ms(fns, args.rounds).items()}
    ceiling = done / seconds.pop("ceiling")
    table = Table(title=f"{kernel_variant()}, 1 thread: rate / scalar-popcnt ceiling "
                        f"({np.median(ceiling) / 1e9:.0f} G binary MACs/s, same rounds)")
    for column in ("", "ms", "G MACs/s", "x scalar ceiling", "quartiles"):
        table.add_column(column, justify="left" if not column else "right")
    for name, t in seconds.items():
        rate = macs[name] / t
        ratio = rate / ceiling
        q1, q3 = quartiles(ratio)
        table.add_row(name, f"{1e3 * np.median(t):.3f}", f"{np.median(rate) / 1e9:.0f}",
                      f"{np.median(ratio):.3f}", f"{q1:.3f}-{q3:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
