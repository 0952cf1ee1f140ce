"""Packed end-to-end inference: binary convs on the XNOR kernels, everything else in PyTorch.

:func:`pack_model` deep-copies a registry model (or any model whose binary layers are
``Conv2d``) and swaps each binary conv for a :class:`PackedConv`, whose weight signs are
packed once. Per-output-channel factors become one float affine on the kernel's int32
result, computed in one pass that writes a contiguous NCHW tensor (the layout the kernel
writes and the next packed layer reads without a transpose). In a :class:`BinaryConvUnit`
(sign -> conv -> BN, + shortcut) the weight scale E, the BN and the residual add are all
fused into that pass.

:func:`benchmark_end_to_end` times one image through the packed model, the float32 model
and the simulated-binary PyTorch model in the same run.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from numba import njit, prange
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch import nn

from sofar_cost.binary import BinaryConv2d, is_binary_layer, set_binarization
from sofar_cost.errors import SofarError
from sofar_cost.kernels import PackedBinaryConv2d, kernel_variant
from sofar_cost.kernels.bench import median_ms, thread_count
from sofar_cost.model_source import ModelSource, load_source
from sofar_cost.models.layers import BinaryConvUnit

__all__ = ["PackedConv", "PackedConvUnit", "benchmark_end_to_end", "pack_model"]


@njit(parallel=True, cache=True)
def _affine_kernel(
    acc: np.ndarray, scale: np.ndarray, shift: np.ndarray, residual: np.ndarray | None,
    out: np.ndarray,
) -> None:
    """``out[n, c] = acc[n, c] * scale[c] + shift[c] (+ residual[n, c])``, int32 -> float in
    one NCHW pass. Numba compiles the ``residual=None`` call without the residual branch."""
    n_img, chans, height, width = acc.shape
    for task in prange(n_img * chans):
        n, c = task // chans, task % chans
        for h in range(height):
            src, dst = acc[n, c, h], out[n, c, h]
            if residual is None:
                for w in range(width):
                    dst[w] = src[w] * scale[c] + shift[c]
            else:
                res = residual[n, c, h]
                for w in range(width):
                    dst[w] = src[w] * scale[c] + shift[c] + res[w]


def weight_scale(conv: nn.Conv2d) -> torch.Tensor:
    """E = mean |W| per output channel, the factor :func:`binarize_weight` multiplies in."""
    return conv.weight.detach().double().abs().mean(dim=(1, 2, 3))


class PackedConv(nn.Module):
    """A binary conv on the packed kernel: ``scale * conv(sign(x), sign(W)) + shift``.

    ``scale``/``shift`` are per output channel (E, folded BN, bias). The output is a contiguous
    NCHW tensor in the dtype of ``scale`` (the model's: float32, or float64 for
    exact comparisons); ``residual`` (same shape) is added in the same pass.
    """

    def __init__(
        self, kernel: PackedBinaryConv2d, scale: torch.Tensor, shift: torch.Tensor
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.register_buffer("scale", scale.detach().contiguous())
        self.register_buffer("shift", shift.detach().contiguous())

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, name: str, bn: nn.BatchNorm2d | None = None) -> PackedConv:
        """Pack ``conv`` (a :class:`BinaryConv2d`, or a user binary Conv2d: then no E).

        A following eval-mode ``bn`` is folded in: ``gamma / std * (E * acc) + beta - ...``.
        """
        f64 = torch.float64
        try:
            kernel = PackedBinaryConv2d.from_module(conv, name=name)
        except ValueError as error:
            raise SofarError(f"cannot pack binary layer {name}: {error}") from None
        ones = torch.ones(conv.out_channels, dtype=f64)
        zeros = torch.zeros_like(ones)
        scale = weight_scale(conv) if isinstance(conv, BinaryConv2d) else ones
        shift = conv.bias.detach().to(f64) if conv.bias is not None else zeros
        if bn is not None:
            gain = bn.weight.detach().to(f64) if bn.affine else ones
            beta = bn.bias.detach().to(f64) if bn.affine else zeros
            gain = gain / torch.sqrt(bn.running_var.to(f64) + bn.eps)
            scale, shift = scale * gain, (shift - bn.running_mean.to(f64)) * gain + beta
        dtype = conv.weight.dtype  # folded in float64, run in the model's own precision
        return cls(kernel, scale.to(dtype), shift.to(dtype))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        acc = self.kernel(x)
        out = torch.empty(acc.shape, dtype=self.scale.dtype)
        res = None if residual is None else residual.detach().to(out.dtype).contiguous().numpy()
        _affine_kernel(acc, self.scale.numpy(), self.shift.numpy(), res, out.numpy())
        return out

    def extra_repr(self) -> str:
        k = self.kernel
        return (f"{k.name}: {k.in_channels} -> {k.out_channels}, kernel {k.weights.kernel_size}, "
                f"stride {k.stride}, padding {k.padding}")


class PackedConvUnit(nn.Module):
    """:class:`BinaryConvUnit` with conv, BN and the shortcut add fused into one pass."""

    def __init__(self, conv: PackedConv, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else None
        return self.conv(x, residual)


def _foldable_bn(bn: nn.Module) -> bool:
    """An eval-mode BN with running statistics: a fixed per-channel affine."""
    return type(bn) is nn.BatchNorm2d and bn.running_mean is not None and not bn.training


def _packed(module: nn.Module, name: str) -> nn.Module | None:
    """The packed replacement of a binary layer / Bi-Real unit, or None for other modules."""
    if type(module) is BinaryConvUnit and is_binary_layer(module.conv):
        if _foldable_bn(module.bn):
            return PackedConvUnit(PackedConv.from_conv(module.conv, f"{name}.conv", module.bn),
                                  module.shortcut)
        return None  # not foldable: descend, pack the conv alone, keep BN in torch
    if not is_binary_layer(module):
        return None
    if not isinstance(module, nn.Conv2d):
        raise SofarError(f"cannot pack binary layer {name} ({type(module).__name__}): only "
                         "binary Conv2d layers run on the packed kernels")
    if type(module) is not BinaryConv2d and not _probe(module, name):
        raise SofarError(f"cannot pack binary layer {name} ({type(module).__name__}): its "
                         "forward is not conv2d(sign(x), sign(W)) + bias, the packed semantics")
    return PackedConv.from_conv(module, name)


def _probe(module: nn.Conv2d, name: str) -> bool:
    """Whether a user binary Conv2d computes conv2d(sign(x), sign(W)) + bias on a random input."""
    k = max(module.kernel_size)
    x = torch.randn(1, module.in_channels, 2 * k + 3, 2 * k + 3, generator=torch.manual_seed(0),
                    dtype=module.weight.dtype)
    with torch.no_grad():
        want = module(x)
        got = PackedConv.from_conv(module, name)(x)
    return want.shape == got.shape and torch.allclose(want, got, rtol=1e-4, atol=1e-4)


def _replace(parent: nn.Module, prefix: str) -> None:
    for child_name, child in list(parent.named_children()):
        path = f"{prefix}.{child_name}" if prefix else child_name
        new = _packed(child, path)
        if new is None:
            _replace(child, path)
        else:
            setattr(parent, child_name, new)


def pack_model(model: nn.Module) -> nn.Module:
    """An eval-mode inference copy of ``model`` whose binary convs run on the packed kernels.

    Args:
        model: a registry model or any model whose binary layers are ``Conv2d``
            (``sofar_binary`` marker or registered class) computing conv2d(sign(x), sign(W)).

    Returns:
        A deep copy (the original is untouched) for inference: binary convs (with a following
        eval-mode BatchNorm and Bi-Real shortcut fused) run on the XNOR-popcount kernels,
        everything else in PyTorch.

    Raises:
        SofarError: naming the layer (module path) when a binary layer cannot be packed
            (groups, dilation, unequal stride/padding, non-conv binary layers, or a forward
            that is not the packed semantics).

    Example:
        >>> import torch
        >>> from sofar_cost import create_model, pack_model
        >>> model = create_model("bireal18", "cifar100").eval()
        >>> packed = pack_model(model)
        >>> packed(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 100])
    """
    packed = copy.deepcopy(model).eval().requires_grad_(False)
    root = _packed(packed, type(model).__name__)
    if root is not None:
        return root
    _replace(packed, "")
    # the float parts (stem conv above all) run channels-last: bireal18 end to end measured
    # 11.7 ms this way against 16.7-18.6 ms all-NCHW, though packed convs then copy their input
    packed.to(memory_format=torch.channels_last)
    packed.register_forward_pre_hook(_channels_last_inputs)
    return packed


def _channels_last_inputs(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: 4-d tensor inputs to channels-last memory."""
    return tuple(a.contiguous(memory_format=torch.channels_last)
                 if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)


def benchmark_end_to_end(
    name: str | ModelSource,
    dataset: str = "imagenet",
    threads: int = 1,
    repeat: int = 10,
    progress: bool = True,
) -> dict[str, Any]:
    """Median latency of one image: packed model, float32 PyTorch, simulated-binary PyTorch.

    All three run in this one call with the same thread count (Numba and torch alike), so
    their ratio is meaningful on any machine. The float32 baseline is the same architecture
    with binarization off, timed in NCHW and channels-last (the faster counts). ``name`` is
    any model spec or :class:`ModelSource` (a user model keeps its own input shape).
    """
    if threads < 1 or repeat < 1:
        raise SofarError(f"threads and repeat must be at least 1, got {threads}, {repeat}")
    source = name if isinstance(name, ModelSource) else load_source(name)
    model = source.build(None, dataset).eval()
    packed = pack_model(model)
    fp32 = set_binarization(copy.deepcopy(model), False)
    x = torch.randn(source.input_shape(dataset), generator=torch.manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fp32_cl = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    runs = {
        "ms_packed": lambda: packed(x),
        "ms_torch_fp32_nchw": lambda: fp32(x),
        "ms_torch_fp32_channels_last": lambda: fp32_cl(x_cl),
        "ms_torch_binary_sim": lambda: model(x),
    }
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    result: dict[str, Any] = {}
    bar = Progress(*columns, transient=True, disable=not progress)
    with thread_count(threads), torch.inference_mode(), bar:
        task = bar.add_task("", total=len(runs))
        for key, fn in runs.items():
            bar.update(task, description=f"{source.name}: {key[3:]} ({threads} thread(s))")
            result[key] = median_ms(fn, repeat, warmup=2, budget_s=4.0)
            bar.advance(task)
    ms_fp32 = min(result["ms_torch_fp32_nchw"], result["ms_torch_fp32_channels_last"])
    report = source.report(dataset)
    flops = report.flops
    return {
        "model": source.name,
        "dataset": report.dataset,
        "width": report.width,
        "threads": threads,
        "repeat": repeat,
        "kernel_variant": kernel_variant(),
        "flops": flops,
        "ms_packed": result["ms_packed"],
        "ms_torch_fp32": ms_fp32,
        "ms_torch_fp32_nchw": result["ms_torch_fp32_nchw"],
        "ms_torch_fp32_channels_last": result["ms_torch_fp32_channels_last"],
        "ms_torch_binary_sim": result["ms_torch_binary_sim"],
        "speedup_vs_fp32": ms_fp32 / result["ms_packed"],
        "speedup_vs_binary_sim": result["ms_torch_binary_sim"] / result["ms_packed"],
        "ms_per_gflop": result["ms_packed"] / (flops / 1e9),
    }
