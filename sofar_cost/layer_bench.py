"""Per-layer kernel timings of a whole model, next to its analytic costs (``sofar-cost bench``).

Each binary conv layer of the model is timed on the packed kernel and on torch float32 conv2d
with the same shape and thread count, in one run, the two sides in interleaved rounds
(:func:`sofar_cost.kernels.bench.paired_median_ms`) with their quartiles as the spread.
Layers of identical shape are timed once (a 149-layer RF net has only a handful of distinct
shapes) and the timing is shared. ``kernel`` picks the popcount code path (``auto``,
``avx512``, ``avx2``, ``scalar``); one other than this process compiles runs in a
subprocess compiled for it (:mod:`sofar_cost.kernels.targets`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sofar_cost.binary import is_binary_layer
from sofar_cost.count_options import CountOptions
from sofar_cost.errors import SofarError
from sofar_cost.kernels import kernel_variant, popcount_ceilings, runnable_variants
from sofar_cost.kernels.bench import ConvShape, benchmark_layers, thread_count
from sofar_cost.kernels.conv import check_module
from sofar_cost.kernels.targets import KERNELS, call_with_kernel
from sofar_cost.model_source import ModelSource, as_source
from sofar_cost.models.registry import check_dataset
from sofar_cost.results import EndToEnd, LayerBench


def binary_conv_shapes(model: nn.Module, shape: tuple[int, ...]) -> list[ConvShape]:
    """The shape of every binary conv the model runs, in execution order (traced on meta)."""
    found: list[ConvShape] = []
    names = {id(m): n for n, m in model.named_modules()}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not (is_binary_layer(module) and isinstance(module, nn.Conv2d)):
            return
        name = names.get(id(module), type(module).__name__)
        try:
            stride, padding = check_module(module, f"layer {name}")
        except ValueError as error:
            raise SofarError(str(error)) from None
        _, channels, height, width = inputs[0].shape
        kh, kw = module.kernel_size
        kernel = kh if kh == kw else (kh, kw)
        found.append(
            ConvShape(name, channels, module.out_channels, height, width, kernel, stride, padding)
        )

    handle = nn.modules.module.register_module_forward_pre_hook(record)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape, device="meta"))
    finally:
        handle.remove()
    return found


def _shape_key(s: ConvShape) -> tuple[int, ...]:
    """Layers equal in everything but their name share one timing."""
    return (s.in_channels, s.out_channels, s.height, s.width, *s.kernel_hw, s.stride, s.padding)


def bench_model_layers(
    name: str | ModelSource | dict[str, Any],
    dataset: str = "imagenet",
    width: int | None = None,
    threads: int = 1,
    repeat: int = 10,
    progress: bool = True,
    kernel: str = "auto",
) -> LayerBench:
    """Time every binary conv layer of a model: any spec or :class:`ModelSource`, or its
    ``to_json()`` form (``sofar-cost bench``).

    ``popcount_ceilings`` holds the one-thread ceiling of every popcount variant the
    compile target can run (G binary MACs/s), measured in the same run; per layer,
    ``ceiling_fraction`` is against the kernel's own variant and
    ``scalar_ceiling_fraction`` against ``scalar-popcnt`` (the baseline a vector path
    must beat), both per thread used, and both paired: the two ceiling loops run in the
    layer's own interleaved rounds, each fraction is the median of the per-round ones
    (``ceiling_fraction_iqr``, ``scalar_ceiling_fraction_iqr``: their quartiles).
    """
    if threads < 1:
        raise SofarError(f"--threads must be at least 1, got {threads}")
    if repeat < 1:
        raise SofarError(f"--repeat must be at least 1, got {repeat}")
    if kernel != "auto" and kernel not in KERNELS:
        raise SofarError(f"unknown kernel {kernel!r} (valid: auto, {', '.join(KERNELS)})")
    source = as_source(name)
    if kernel != "auto":  # in a subprocess when this process compiles another variant
        return LayerBench(**call_with_kernel(
            kernel, "sofar_cost.layer_bench:bench_model_layers", name=source.to_json(),
            dataset=dataset, width=width, threads=threads, repeat=repeat, progress=False))
    with torch.device("meta"):
        model = source.build(width, dataset)
    shapes = binary_conv_shapes(model, source.input_shape(dataset))
    if not shapes:
        raise SofarError(f"model {source.name!r} has no binary conv layer to benchmark")
    unique = list({_shape_key(s): s for s in shapes}.values())
    with thread_count(1):
        before = popcount_ceilings(seconds=0.15)
    paired = [kernel_variant()] + (["scalar-popcnt"] if kernel_variant() != "scalar-popcnt"
                                   and "scalar-popcnt" in runnable_variants() else [])
    results = benchmark_layers(unique, threads, repeat, progress, paired)
    timed = {_shape_key(s): r for s, r in zip(unique, results, strict=True)}
    with thread_count(1):  # before and after the layers, the better: the machine drifts
        ceilings = {v: max(g, g_after) for (v, g), g_after in
                    zip(before.items(), popcount_ceilings(seconds=0.15).values(), strict=True)}
    layers = []
    for shape in shapes:
        result = timed[_shape_key(shape)]
        layers.append({
            "name": shape.name,
            "in_channels": shape.in_channels,
            "out_channels": shape.out_channels,
            "height": shape.height,
            "width": shape.width,
            "kernel_size": shape.kernel_size,
            "stride": shape.stride,
            "binary_macs": shape.binary_macs,
            "flops": CountOptions().flops(binary_macs=shape.binary_macs),
            "ms_xnor": result["ms_xnor"],
            "ms_torch_fp32": result["ms_torch_fp32"],
            "gmacs_per_s": result["gmacs_per_s"],
            "speedup": result["speedup"],
            "ceiling_fraction": result["paired_ceiling_fraction"][kernel_variant()],
            "scalar_ceiling_fraction": result["paired_ceiling_fraction"].get("scalar-popcnt"),
            "ceiling_fraction_iqr": result["paired_ceiling_fraction_iqr"][kernel_variant()],
            "scalar_ceiling_fraction_iqr":
                result["paired_ceiling_fraction_iqr"].get("scalar-popcnt"),
            "ms_xnor_iqr": result["ms_xnor_iqr"],
            "ms_torch_fp32_iqr": result["ms_torch_fp32_iqr"],
            "speedup_iqr": result["speedup_iqr"],
        })  # fmt: skip
    total_xnor = sum(layer["ms_xnor"] for layer in layers)
    total_torch = sum(layer["ms_torch_fp32"] for layer in layers)
    return LayerBench(
        source.name, source.label(dataset), threads, kernel_variant(),
        ceilings[kernel_variant()], ceilings,
        repeat, layers,
        total_binary_macs=sum(layer["binary_macs"] for layer in layers),
        total_ms_xnor=total_xnor,
        total_ms_torch_fp32=total_torch,
        total_speedup=total_torch / total_xnor,
        worst_speedup=min(layer["speedup"] for layer in layers),
    )  # fmt: skip


def bench(
    name: str | ModelSource,
    dataset: str = "imagenet",
    width: int | None = None,
    threads: int = 1,
    repeat: int = 10,
    end_to_end: bool = False,
    progress: bool = True,
    kernel: str = "auto",
) -> LayerBench | EndToEnd:
    """``sofar-cost bench``: per layer, or (``end_to_end``) the whole packed network."""
    check_dataset(dataset)
    if not end_to_end:
        return bench_model_layers(name, dataset, width, threads, repeat, progress, kernel)
    if width is not None:
        raise SofarError("--end-to-end times the paper's width; drop --width")
    source = as_source(name)  # another kernel runs in a subprocess: it gets the JSON form
    model = source if kernel == "auto" else source.to_json()
    return EndToEnd(call_with_kernel(kernel, "sofar_cost.engine:benchmark_end_to_end", name=model,
                                     dataset=dataset, threads=threads, repeat=repeat,
                                     progress=progress and kernel == "auto"))
