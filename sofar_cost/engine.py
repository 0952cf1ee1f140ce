"""Packed end-to-end inference: binary layers on the XNOR kernels, the rest in PyTorch.

:func:`pack_model` deep-copies a registry model (or any model whose binary layers are
``Conv2d``/``Linear``) and swaps each binary layer for a :class:`PackedConv`, whose weight
signs are packed once. Per-output-channel factors become one float affine on the kernel's
int32 result, computed in one pass that writes a contiguous NCHW tensor (the layout the
kernel writes and the next packed layer reads without a transpose). Profiles of bireal18
and binarydensenet28 at one thread guided the rest (see ``docs`` in the README):

- :class:`BinaryConvUnit` (sign -> conv -> BN, + shortcut): weight scale E, BN and the
  residual add are fused into that one pass, which also packs the next unit's input, within
  a stage and across stages (:class:`PackedUnitRun`, which also runs Bi-Real's downsampling
  shortcut, average pool and 1x1 product, into buffers it keeps);
- an eval BN right after a float conv is folded into the conv's weights and bias, and float
  1x1 convs run as one matrix product on NCHW (torch's channels-last 1x1 conv on an NCHW
  input took a slow path: 0.3-0.6 ms per Bi-Real shortcut);
- a run of DenseNet layers (BN -> sign -> conv, concatenated) writes into one preallocated
  buffer instead of concatenating, and BN + sign are one thresholded packing pass over it;
  the transition's BN -> MaxPool -> ReLU is one pass too;
- the classifier head ([BN] [ReLU], global average pool, float linear layer) is one call
  (:class:`PackedHead`).

Kernels come from :func:`.kernels.kernel_set.kernels`: serial twins at one Numba thread.

Binary layers the kernels cannot run (dilation, groups, a real-valued input) run in torch
with their binarized weights precomputed (:class:`TorchBinaryLayer`), so logits stay equal.

:func:`benchmark_end_to_end` times one image through the packed model, the float32 model
and the simulated-binary PyTorch model in the same run, in alternating rounds.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from torch import nn
from torch.nn import functional as F

from sofar_cost.binary import BinaryConv2d, BinaryLinear, is_binary_layer, set_binarization, sign
from sofar_cost.errors import SofarError
from sofar_cost.kernels import PackedBinaryConv2d, kernel_variant
from sofar_cost.kernels._conv_kernel import empty_planes
from sofar_cost.kernels.bench import paired_times_ms, quartiles, thread_count
from sofar_cost.kernels.fused import classifier_head_kernel
from sofar_cost.kernels.kernel_set import kernels
from sofar_cost.kernels.packing import packing_source, to_numpy
from sofar_cost.model_source import ModelSource, as_source
from sofar_cost.models.densenet import DenseLayer, Transition
from sofar_cost.models.layers import BinaryConvUnit, ClassifierHead

__all__ = ["PackedConv", "PackedConvUnit", "PackedDenseRun", "PackedHead", "PackedUnitRun",
           "TorchBinaryLayer", "benchmark_end_to_end", "pack_model"]

F64 = torch.float64


def weight_scale(layer: nn.Module) -> torch.Tensor:
    """E = mean |W| per output channel, the factor :func:`binarize_weight` multiplies in;
    ones for a layer without it (a user sign layer, or ``scale_weights=False``)."""
    w = layer.weight.detach().to(F64)
    if not isinstance(layer, BinaryConv2d | BinaryLinear) or not getattr(layer, "scale_weights",
                                                                           True):
        return torch.ones(w.shape[0], dtype=F64)
    return w.abs().mean(dim=tuple(range(1, w.dim())))


def bn_affine(bn: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) with ``bn(x) = x * alpha + beta``, computed in ``dtype`` the way torch's
    eval BN computes them, so thresholded signs match torch's BN output."""
    ones = torch.ones(bn.num_features, dtype=dtype)
    weight = bn.weight.detach().to(dtype) if bn.affine else ones
    bias = bn.bias.detach().to(dtype) if bn.affine else torch.zeros_like(ones)
    alpha = weight / torch.sqrt(bn.running_var.to(dtype) + bn.eps)
    beta = bias - bn.running_mean.to(dtype) * alpha
    return alpha.contiguous().numpy(), beta.contiguous().numpy()


def _binary_input(layer: nn.Module) -> bool:
    """Whether the layer binarizes its input (larq-zoo layers may not: ``binary_input``)."""
    return bool(getattr(layer, "binary_input", True)) and bool(
        getattr(layer, "sofar_binary_input", True))


class PackedConv(nn.Module):
    """A binary conv (or linear layer) on the packed kernel:
    ``scale * conv(sign(x), sign(W)) + shift``.

    ``scale``/``shift`` are per output channel (E, folded BN, bias). The output is a contiguous
    NCHW tensor in the dtype of ``scale`` (the model's: float32, or float64 for
    exact comparisons); ``residual`` (same shape) is added in the same pass.
    """

    def __init__(
        self, kernel: PackedBinaryConv2d, scale: torch.Tensor, shift: torch.Tensor,
        linear: bool = False,
    ) -> None:
        super().__init__()
        self.kernel = kernel
        self.linear = linear
        self.register_buffer("scale", scale.detach().contiguous())
        self.register_buffer("shift", shift.detach().contiguous())

    @classmethod
    def from_conv(cls, conv: nn.Conv2d | nn.Linear, name: str,
                  bn: nn.BatchNorm2d | None = None) -> PackedConv:
        """Pack ``conv`` (a :class:`BinaryConv2d`/:class:`BinaryLinear`, or a user binary
        Conv2d/Linear: then no E).

        A following eval-mode ``bn`` is folded in: ``gamma / std * (E * acc) + beta - ...``.
        """
        linear = isinstance(conv, nn.Linear)
        try:
            if linear:
                kernel = PackedBinaryConv2d.from_weight(conv.weight[:, :, None, None], name=name)
            else:
                kernel = PackedBinaryConv2d.from_module(conv, name=name)
        except ValueError as error:
            raise SofarError(f"cannot pack binary layer {name}: {error}") from None
        scale = weight_scale(conv)
        shift = conv.bias.detach().to(F64) if conv.bias is not None else torch.zeros_like(scale)
        if bn is not None:
            alpha, beta = (torch.from_numpy(v) for v in bn_affine(bn, F64))
            scale, shift = scale * alpha, shift * alpha + beta
        dtype = conv.weight.dtype  # folded in float64, run in the model's own precision
        return cls(kernel, scale.to(dtype), shift.to(dtype), linear)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        x = x[:, :, None, None] if self.linear else x
        acc = self.kernel.accumulate(x)
        shape = self.kernel.output_view(acc, *x.shape[2:]).shape
        out = torch.empty(shape, dtype=self.scale.dtype)
        res = None if residual is None else residual.detach().to(out.dtype).contiguous().numpy()
        kernels().affine_kernel(acc, self.scale.numpy(), self.shift.numpy(), res, out.numpy(),
                                False)
        return out.flatten(1) if self.linear else out

    def extra_repr(self) -> str:
        k = self.kernel
        return (f"{k.name}: {k.in_channels} -> {k.out_channels}, kernel {k.weights.kernel_size}, "
                f"stride {k.stride}, padding {k.padding}")


class TorchBinaryLayer(nn.Module):
    """A binary layer the packed kernels cannot run (dilation, groups, real-valued input),
    in torch with its binarized weights ``E * sign(W)`` computed once: same result as the
    layer itself, without re-binarizing the weights per call."""

    def __init__(self, layer: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        w = layer.weight.detach()
        scale = weight_scale(layer).to(w.dtype).reshape(-1, *[1] * (w.dim() - 1))
        self.register_buffer("weight", scale * sign(w))
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach())
        self.binary_input = _binary_input(layer)
        self.conv_args = None if isinstance(layer, nn.Linear) else (
            layer.stride, layer.padding, layer.dilation, layer.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary_input:
            x = sign(x)
        if self.conv_args is None:
            return F.linear(x, self.weight, self.bias)
        return F.conv2d(x, self.weight, self.bias, *self.conv_args)


class PackedConvUnit(nn.Module):
    """:class:`BinaryConvUnit` with conv, BN and the shortcut add fused into one pass."""

    def __init__(self, conv: PackedConv, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else None
        return self.conv(x, residual)


class _Shortcut:
    """A unit's residual inside a :class:`PackedUnitRun`, from the previous unit's float
    output (NCHW numpy). The general case runs the shortcut module in torch."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        self.module, self.dtype = module, dtype

    def __call__(self, previous: np.ndarray) -> np.ndarray:
        res = self.module(torch.from_numpy(previous)).detach()
        return res.to(self.dtype).contiguous().numpy()


class _IdentityShortcut(_Shortcut):
    """``nn.Identity``: the previous output as it is (NCHW, the unit's dtype: no copy)."""

    def __call__(self, previous: np.ndarray) -> np.ndarray:
        return previous


class _PooledPointwise(_Shortcut):
    """Bi-Real's downsampling shortcut, AvgPool2 -> PointwiseConv (BN folded), into buffers
    allocated once: no module calls, tensor conversions or allocations per forward (on a
    packed bireal18, ~0.07 ms per shortcut measured outside its two kernels)."""

    def __init__(self, shortcut: nn.Sequential, pointwise: PointwiseConv, n: int, height: int,
                 width: int) -> None:
        super().__init__(shortcut, pointwise.weight.dtype)
        weight = pointwise.weight
        pooled = torch.empty(n, weight.shape[1], height // 2, width // 2, dtype=weight.dtype)
        self.pooled, self.flat = pooled.numpy(), pooled.view(n, weight.shape[1], -1)
        self.weight, self.bias = weight.expand(n, -1, -1), pointwise.bias
        self.out = torch.empty(n, weight.shape[0], *pooled.shape[2:], dtype=weight.dtype)
        self.flat_out = self.out.view(n, weight.shape[0], -1)

    def __call__(self, previous: np.ndarray) -> np.ndarray:
        kernels().avgpool2_kernel(previous, self.pooled)
        torch.baddbmm(self.bias, self.weight, self.flat, out=self.flat_out)  # as PointwiseConv
        return self.out.numpy()


@dataclass
class _UnitStep:
    """One unit of a :class:`PackedUnitRun` at one input size, its buffers allocated once."""

    conv_args: tuple  # conv_kernel's arguments: packed input ... int32 output
    acc: np.ndarray  # the int32 output as the kernel writes it (empty_output)
    out: np.ndarray | None  # float output (reused; the run's last: a new array like it)
    pack_args: tuple  # (pad, stride, planes) of the next unit's packed input, or ()
    factors: tuple  # (scale, shift) as numpy arrays
    shortcut: _Shortcut | None  # the residual from the previous output, or no residual
    in_place: bool  # the output overwrites the residual, a buffer of the run (not ``out``)


class PackedUnitRun(nn.Module):
    """Consecutive :class:`PackedConvUnit` s, across stages (:func:`_merged_unit_runs`): each
    unit's output pass also packs its signs for the next unit
    (:func:`.fused.affine_pack_kernel`), so only the run's input is packed from floats; the
    float output still feeds the next unit's shortcut.

    Per input size the packed planes, int32 outputs, intermediate float outputs and the
    buffers of Bi-Real's downsampling shortcuts are allocated once and reused (the packing
    writes only pixel words, so borders stay 0): the per-call Python and allocation work
    measured ~75 us per unit before. The module is therefore not reentrant (one forward at a
    time), as with any inference buffer reuse.
    """

    def __init__(self, units: list[PackedConvUnit]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self._steps: dict[tuple[int, int, int], tuple[tuple, list[_UnitStep]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        first_pack, steps = self._steps.get((n, height, width)) or self._plan(n, height, width)
        k = kernels()
        k.pack_into(*packing_source(to_numpy(x)), *first_pack)
        previous = None  # the run's input as NCHW numpy, where the first unit has a residual
        if steps[0].shortcut is not None:
            previous = x.detach().to(steps[0].shortcut.dtype).contiguous().numpy()
        for step in steps:
            res = None if step.shortcut is None else step.shortcut(previous)
            k.conv_kernel(*step.conv_args)  # after the shortcut: its input was in cache
            if step.in_place:
                k.affine_pack_kernel(step.acc, *step.factors, None, res, True, *step.pack_args)
                previous = res
            elif step.pack_args:
                k.affine_pack_kernel(step.acc, *step.factors, res, step.out, False,
                                     *step.pack_args)
                previous = step.out
            else:
                previous = np.empty_like(step.out)
                k.affine_kernel(step.acc, *step.factors, res, previous, False)
        return torch.from_numpy(previous)

    def _plan(self, n: int, height: int, width: int) -> tuple[tuple, list[_UnitStep]]:
        """Buffers and kernel arguments of every unit for one input size (cached)."""
        kernels = [unit.conv.kernel for unit in self.units]
        sizes = self._sizes(height, width)
        packed = [self._planes(k, n, *hw) for k, hw in zip(kernels, sizes, strict=True)]
        # Units share buffers of one shape: a small working set stays in cache between
        # runs of other code. An int32 output is read only by its own unit's output pass.
        # A unit whose residual is a buffer of the run (the previous unit's output, or a
        # downsampling shortcut's) writes its output over it; any other unit writes into
        # a buffer that does not hold the previous output (which its shortcut reads).
        shared: dict[tuple, Any] = {}
        steps: list[_UnitStep] = []
        previous = None  # the buffer holding the previous unit's output, where shared

        def buffer_besides(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            pair = shared.setdefault(("out", shape, dtype), [])
            free = [b for b in pair if b is not previous]
            if not free:
                pair.append(np.empty(shape, dtype))
                free = pair[-1:]
            return free[0]

        for index, (kernel, hw) in enumerate(zip(kernels, sizes, strict=True)):
            buffer, planes = packed[index]
            plan = kernel._plan_for(*hw)
            acc = kernel.empty_output(n, plan)
            acc = shared.setdefault(("acc", acc.shape), acc)
            unit = self.units[index]
            dtype = unit.conv.scale.numpy().dtype
            pack_args = ()
            if index + 1 < len(kernels):
                nxt = kernels[index + 1]._plan_for(*plan.out_hw)
                pack_args = (*nxt.layout[:2], packed[index + 1][1])
            shortcut = self._shortcut(unit, n, hw)
            in_place = bool(pack_args) and (isinstance(shortcut, _PooledPointwise) or (
                type(shortcut) is _IdentityShortcut and index > 0
                and steps[-1].factors[0].dtype == dtype))
            out = None
            if not in_place:
                out = previous = buffer_besides((n, kernel.out_channels, *plan.out_hw), dtype)
            elif isinstance(shortcut, _PooledPointwise):
                previous = None  # the shortcut's own buffer
            steps.append(_UnitStep((buffer, planes[0, 0].size,
                                    *plan.kernel_args(kernel._kernel_weights, acc)),
                                   acc, out, pack_args,
                                   (unit.conv.scale.numpy(), unit.conv.shift.numpy()),
                                   shortcut, in_place))
        first = kernels[0]._plan_for(height, width).layout[:2]
        self._steps[n, height, width] = (*first, packed[0][1]), steps
        return self._steps[n, height, width]

    @staticmethod
    def pooled_shortcut(unit: PackedConvUnit, in_hw: tuple[int, int]) -> PointwiseConv | None:
        """The PointwiseConv of a unit whose shortcut is AvgPool2 -> PointwiseConv (Identities
        aside, as Bi-Real's downsampling one packs), of the unit's output size and dtype at
        input size ``in_hw``: the run computes it as :class:`_PooledPointwise`. Else None."""
        if type(unit.shortcut) is not nn.Sequential:
            return None
        steps = [m for m in unit.shortcut if type(m) is not nn.Identity]
        if [type(m) for m in steps] != [AvgPool2, PointwiseConv]:
            return None
        pointwise = steps[1]
        out_hw = unit.conv.kernel.output_hw(*in_hw)
        same = (in_hw[0] // 2, in_hw[1] // 2) == tuple(out_hw)
        return pointwise if same and pointwise.weight.dtype == unit.conv.scale.dtype else None

    @classmethod
    def _shortcut(cls, unit: PackedConvUnit, n: int,
                  in_hw: tuple[int, int]) -> _Shortcut | None:
        """How a unit gets its residual (see :class:`_Shortcut`)."""
        if unit.shortcut is None:
            return None
        dtype = unit.conv.scale.dtype
        if type(unit.shortcut) is nn.Identity:
            return _IdentityShortcut(unit.shortcut, dtype)
        pointwise = cls.pooled_shortcut(unit, in_hw)
        if pointwise is not None:
            return _PooledPointwise(unit.shortcut, pointwise, n, *in_hw)
        return _Shortcut(unit.shortcut, dtype)

    def _sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The input size of every unit."""
        sizes = []
        for unit in self.units:
            sizes.append((height, width))
            height, width = unit.conv.kernel.output_hw(height, width)
        return sizes

    @staticmethod
    def _planes(kernel: PackedBinaryConv2d, n: int, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed packed input (flat buffer, planes) of ``kernel`` for an input size."""
        plan = kernel._plan_for(height, width)
        return empty_planes(n, (kernel.in_channels + 63) // 64, plan.layout[1], *plan.phase_shape)


class PackedDenseRun(nn.Module):
    """Consecutive :class:`DenseLayer` s (BN -> sign -> binary conv, concatenated) on one
    buffer: each layer packs the thresholded signs of the channels so far (its BN folded
    into the packing pass, no BN output written) and writes its ``growth`` new channels
    into the buffer, so nothing is concatenated. Each layer has its own BN, so its bits
    of an old channel differ from the previous layer's: the packing pass reads the whole
    buffer so far (once, as floats), but never writes it."""

    def __init__(self, layers: list[DenseLayer], name: str) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.affines = []
        for index, layer in enumerate(layers):
            self.convs.append(PackedConv.from_conv(layer.conv, f"{name}.{index}.conv"))
            self.affines.append(bn_affine(layer.bn, layer.conv.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        total = c + sum(conv.kernel.out_channels for conv in self.convs)
        buffer = torch.empty(n, total, height, width, dtype=self.convs[0].scale.dtype)
        buffer[:, :c] = x
        buf = buffer.numpy()
        k = kernels()
        for conv, (alpha, beta) in zip(self.convs, self.affines, strict=True):
            kernel = conv.kernel
            plan = kernel._plan_for(height, width)
            pad, stride, _ = plan.layout
            packed, planes = empty_planes(n, (c + 63) // 64, stride, *plan.phase_shape)
            k.pack_kernel(buf, pad, stride, planes, c, alpha, beta)
            acc = kernel.empty_output(n, plan)
            k.conv_kernel(packed, planes[0, 0].size,
                          *plan.kernel_args(kernel._kernel_weights, acc))
            grown = c + kernel.out_channels
            k.affine_kernel(acc, conv.scale.numpy(), conv.shift.numpy(), None, buf[:, c:grown],
                            False)
            c = grown
        return buffer


class PackedTransition(nn.Module):
    """DenseNet transition BN -> MaxPool(2) -> ReLU -> float 1x1 conv: the first three in one
    pass (BN never written), the conv as one matrix product."""

    def __init__(self, transition: Transition) -> None:
        super().__init__()
        bn, _, _, conv = transition
        self.affine = bn_affine(bn, conv.weight.dtype)
        self.conv = PointwiseConv(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        pooled = torch.empty(n, c, height // 2, width // 2, dtype=x.dtype)
        kernels().affine_maxpool_relu_kernel(x.detach().numpy(), *self.affine, pooled.numpy())
        return self.conv(pooled)


class PointwiseConv(nn.Module):
    """A float 1x1 conv (stride 1, no padding) as ``W @ x`` per image on NCHW memory."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.register_buffer("weight", conv.weight.detach()[:, :, 0, 0].contiguous())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels,
                                                                            dtype=conv.weight.dtype)
        self.register_buffer("bias", bias.reshape(1, -1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        flat = x.contiguous().view(n, c, height * width)
        out = torch.baddbmm(self.bias, self.weight.expand(n, -1, -1), flat)
        return out.view(n, -1, height, width)


class AvgPool2(nn.Module):
    """``nn.AvgPool2d(2)`` in one Numba pass over NCHW memory (Bi-Real's shortcut pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        out = torch.empty(n, c, height // 2, width // 2, dtype=x.dtype)
        kernels().avgpool2_kernel(x.detach().numpy(), out.numpy())
        return out


class ReluMaxPool(nn.Module):
    """ReLU -> ``nn.MaxPool2d`` (the ImageNet stem's) in one Numba pass from channels-last
    memory (the stem conv's fast layout) to NCHW (the packed layers' layout)."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.size, self.stride, self.pad = (_single(v) for v in
                                            (pool.kernel_size, pool.stride, pool.padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, height, width = x.shape
        out_h, out_w = ((d + 2 * self.pad - self.size) // self.stride + 1 for d in (height, width))
        out = torch.empty(n, c, out_h, out_w, dtype=x.dtype)
        nhwc = x.detach().contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        kernels().relu_maxpool_nhwc_kernel(nhwc.numpy(), self.size, self.stride, self.pad,
                                           out.numpy())
        return out


class PackedHead(nn.Module):
    """:class:`ClassifierHead` (pre: nothing, ReLU, an eval BN or BN -> ReLU; anything else
    stays a torch module run first) -> global average pool -> float linear layer, in one
    Numba call (:func:`classifier_head_kernel`). In a packed bireal18 timed after a float32
    forward (one thread, a slow phase of the VM), torch's pool and linear layer took 0.40 ms,
    this call 0.18-0.19."""

    def __init__(self, head: ClassifierHead, path: str) -> None:
        super().__init__()
        fc = head.fc
        dtype = fc.weight.dtype
        self.affine, self.relu, self.pre = None, False, None
        steps = list(head.pre) if type(head.pre) is nn.Sequential else [head.pre]
        steps = [m for m in steps if type(m) is not nn.Identity]
        if steps and _foldable_bn(steps[0]):
            self.affine = bn_affine(steps.pop(0), dtype)
        if steps and type(steps[0]) is nn.ReLU:
            steps.pop(0)
            self.relu = True
        if steps:  # a pre the kernel does not fuse: run it (packed where it can be) first
            self.affine, self.relu = None, False
            self.pre = _packed_or_descend(head.pre, f"{path}.pre")
        self.register_buffer("weight", fc.weight.detach().contiguous())
        bias = fc.bias.detach() if fc.bias is not None else torch.zeros(fc.out_features,
                                                                         dtype=dtype)
        self.register_buffer("bias", bias.contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre is not None:
            x = self.pre(x)
        if x.dim() != 4 or x.shape[1] != self.weight.shape[1]:
            raise SofarError(f"classifier head: expected input [N, {self.weight.shape[1]}, H, W], "
                             f"got {tuple(x.shape)}")
        out = torch.empty(x.shape[0], self.weight.shape[0], dtype=self.weight.dtype)
        alpha, beta = self.affine if self.affine is not None else (None, None)
        classifier_head_kernel(x.detach().numpy(), alpha, beta, self.relu,
                               self.weight.numpy(), self.bias.numpy(), out.numpy())
        return out


def _packable_head(module: nn.Module) -> bool:
    """A :class:`ClassifierHead` whose pool and classifier :class:`PackedHead` computes."""
    return (type(module) is ClassifierHead and type(module.pool) is nn.AdaptiveAvgPool2d
            and module.pool.output_size in (1, (1, 1)) and type(module.fc) is nn.Linear
            and not is_binary_layer(module.fc))


def _single(value: int | tuple[int, ...]) -> int:
    """``v`` for ``v`` or ``(v, v)``; -1 for anything else (not a square setting)."""
    values = {value} if isinstance(value, int) else set(value)
    return values.pop() if len(values) == 1 else -1


def _relu_maxpool(relu: nn.Module, pool: nn.Module | None) -> bool:
    """ReLU followed by a square max-pool that :class:`ReluMaxPool` computes."""
    return (type(relu) is nn.ReLU and type(pool) is nn.MaxPool2d and not pool.ceil_mode
            and _single(pool.dilation) == 1 and min(_single(pool.kernel_size),
                                                    _single(pool.stride)) >= 1
            and 0 <= _single(pool.padding) <= _single(pool.kernel_size) // 2
            and not pool.return_indices)


def _avgpool2(module: nn.Module) -> bool:
    """An ``nn.AvgPool2d`` that :class:`AvgPool2` computes."""
    return (type(module) is nn.AvgPool2d and module.kernel_size in (2, (2, 2))
            and module.stride in (2, (2, 2)) and module.padding in (0, (0, 0))
            and not module.ceil_mode and module.divisor_override is None)


def _foldable_bn(bn: nn.Module) -> bool:
    """An eval-mode BN with running statistics: a fixed per-channel affine."""
    return type(bn) is nn.BatchNorm2d and bn.running_mean is not None and not bn.training


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one float conv (folded in float64)."""
    alpha, beta = (torch.from_numpy(v) for v in bn_affine(bn, F64))
    folded = copy.deepcopy(conv)
    w = conv.weight.detach().to(F64)
    bias = conv.bias.detach().to(F64) if conv.bias is not None else torch.zeros_like(alpha)
    folded.weight = nn.Parameter((w * alpha.view(-1, 1, 1, 1)).to(conv.weight.dtype),
                                 requires_grad=False)
    folded.bias = nn.Parameter((bias * alpha + beta).to(conv.weight.dtype), requires_grad=False)
    return folded


def _float_conv(module: nn.Module) -> bool:
    return type(module) is nn.Conv2d and not is_binary_layer(module)


def _pointwise(module: nn.Module) -> bool:
    """A float 1x1 conv that :class:`PointwiseConv` computes."""
    return (_float_conv(module) and module.kernel_size == (1, 1) and module.stride == (1, 1)
            and module.padding == (0, 0) and module.groups == 1)


def _pack_sequential(seq: nn.Sequential, prefix: str) -> None:
    """Fold BN into the float conv before it, pointwise convs onto :class:`PointwiseConv`,
    runs of DenseLayers into a :class:`PackedDenseRun`; other children are packed as usual,
    and consecutive packed units then become one :class:`PackedUnitRun`."""
    children = list(seq.named_children())
    out: list[tuple[str, nn.Module]] = []
    i = 0
    while i < len(children):
        name, child = children[i]
        path = f"{prefix}.{name}" if prefix else name
        nxt = children[i + 1][1] if i + 1 < len(children) else None
        if _float_conv(child) and nxt is not None and _foldable_bn(nxt):
            folded = _fold_bn(child, nxt)
            out += [(name, PointwiseConv(folded) if _pointwise(folded) else folded),
                    (children[i + 1][0], nn.Identity())]
            i += 2
            continue
        if _relu_maxpool(child, nxt):
            out += [(name, nn.Identity()), (children[i + 1][0], ReluMaxPool(nxt))]
            i += 2
            continue
        if _dense_layer(child):
            j = i
            while j < len(children) and _dense_layer(children[j][1]):
                j += 1
            out.append((name, PackedDenseRun([c for _, c in children[i:j]], path)))
            i = j
            continue
        out.append((name, AvgPool2() if _avgpool2(child) else _packed_or_descend(child, path)))
        i += 1
    out = _merged_unit_runs(out)
    for name, _ in children:
        delattr(seq, name)
    for name, module in out:
        seq.add_module(name, module)


def _units(module: nn.Module) -> list[PackedConvUnit] | None:
    """The packed units ``module`` runs, in order, if it runs nothing else (a unit, a run, or
    a Sequential of those, such as a stage packed before its parent); else None."""
    if type(module) is PackedConvUnit:
        return [module]
    if type(module) is PackedUnitRun:
        return list(module.units)
    if type(module) is nn.Sequential and len(module):
        parts = [_units(child) for child in module]
        if all(parts):
            return [unit for part in parts for unit in part]
    return None


def _merged_unit_runs(children: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Consecutive children that only run packed units (units, runs, Bi-Real stages) as one
    :class:`PackedUnitRun`: each unit's output pass packs the next unit's input, also across
    stages, where a stage would otherwise pack its input from floats (bireal18, one thread,
    paired against one run per stage: 0.95-0.97x the time)."""
    tagged = [(name, module, _units(module)) for name, module in children]
    merged: list[tuple[str, nn.Module]] = []
    for only_units, group in itertools.groupby(tagged, key=lambda t: t[2] is not None):
        group = list(group)
        if only_units and len(group) > 1:
            merged.append((group[0][0], PackedUnitRun([u for *_, units in group for u in units])))
        else:
            merged.extend((name, module) for name, module, _ in group)
    return merged


def _packable_unit(module: nn.Module) -> bool:
    """A :class:`BinaryConvUnit` that becomes a :class:`PackedConvUnit`."""
    return (type(module) is BinaryConvUnit and is_binary_layer(module.conv)
            and _foldable_bn(module.bn) and _packable(module.conv))


def _dense_layer(module: nn.Module) -> bool:
    return (type(module) is DenseLayer and _foldable_bn(module.bn)
            and type(module.conv) is BinaryConv2d and module.conv.binarize
            and _binary_input(module.conv) and _packable(module.conv))


def _packable(layer: nn.Module) -> bool:
    """A binary conv/linear layer the packed kernels run as they are."""
    if isinstance(layer, nn.Linear):
        return _binary_input(layer)
    return (_binary_input(layer) and layer.groups == 1 and layer.dilation in ((1, 1), 1)
            and layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
            and len(set(layer.stride)) == 1 and len(set(layer.padding)) == 1)


def _packed(module: nn.Module, name: str) -> nn.Module | None:
    """The packed replacement of a binary layer / Bi-Real unit / transition, or None."""
    if type(module) is BinaryConvUnit and is_binary_layer(module.conv):
        if _packable_unit(module):
            shortcut = module.shortcut
            if shortcut is not None:
                shortcut = _packed_or_descend(shortcut, f"{name}.shortcut")
            return PackedConvUnit(PackedConv.from_conv(module.conv, f"{name}.conv", module.bn),
                                  shortcut)
        return None  # descend: pack (or run in torch) the conv alone, keep BN in torch
    if _packable_head(module):
        return PackedHead(module, name)
    # the fused pass is BN -> max-pool -> ReLU -> 1x1; a pool-less transition runs in torch
    if (type(module) is Transition and len(module) == 4 and _foldable_bn(module[0])
            and _pointwise(module[3])):
        return PackedTransition(module)
    if not is_binary_layer(module):
        return None
    if not isinstance(module, nn.Conv2d | nn.Linear):
        raise SofarError(f"cannot pack binary layer {name} ({type(module).__name__}): only "
                         "binary Conv2d and Linear layers run on the packed kernels")
    toolkit = type(module) in (BinaryConv2d, BinaryLinear)
    if not toolkit and not _probe(module, name):
        raise SofarError(f"cannot pack binary layer {name} ({type(module).__name__}): its "
                         "forward is not conv2d/linear(sign(x), sign(W)) + bias, the packed "
                         "semantics")
    if not _packable(module):
        return TorchBinaryLayer(module)
    return PackedConv.from_conv(module, name)


def _probe(module: nn.Conv2d | nn.Linear, name: str) -> bool:
    """Whether a user binary layer computes layer(sign(x), sign(W)) + bias on a random input."""
    gen = torch.manual_seed(0)
    if isinstance(module, nn.Linear):
        x = torch.randn(2, module.in_features, generator=gen, dtype=module.weight.dtype)
    else:
        k = max(module.kernel_size) * max(module.dilation)
        x = torch.randn(1, module.in_channels, 2 * k + 3, 2 * k + 3, generator=gen,
                        dtype=module.weight.dtype)
    with torch.no_grad():
        want = module(x)
        got = TorchBinaryLayer(module)(x)
    return want.shape == got.shape and torch.allclose(want, got, rtol=1e-4, atol=1e-4)


def _packed_or_descend(module: nn.Module, path: str) -> nn.Module:
    new = _packed(module, path)
    if new is not None:
        return new
    if isinstance(module, nn.Sequential):
        _pack_sequential(module, path)
    else:
        for child_name, child in list(module.named_children()):
            setattr(module, child_name,
                    _packed_or_descend(child, f"{path}.{child_name}" if path else child_name))
    return module


def pack_model(model: nn.Module) -> nn.Module:
    """An eval-mode inference copy of ``model`` whose binary layers run on the packed kernels.

    Args:
        model: a registry model or any model whose binary layers (``sofar_binary`` marker
            or registered class) are ``Conv2d`` / ``Linear`` computing a binary conv.

    Returns:
        A deep copy (the original is untouched) for inference: binary convs and linear
        layers (with a following eval-mode BatchNorm and Bi-Real shortcut fused) run on the
        XNOR-popcount kernels; dilated or grouped binary convs and binary-weight layers on
        real input run in torch with E * sign(W) computed once; everything else in PyTorch.

    Raises:
        SofarError: naming the layer (module path) when a binary layer can be run neither
            packed nor in torch (not a Conv2d/Linear, or a forward that is not a binary
            conv).

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
    packed = _packed_or_descend(packed, "")
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
    name: str | ModelSource | dict[str, Any],
    dataset: str = "imagenet",
    threads: int = 1,
    repeat: int = 10,
    progress: bool = True,
) -> dict[str, Any]:
    """Median latency of one image: packed model, float32 PyTorch, simulated-binary PyTorch.

    All three run in this one call with the same thread count (Numba and torch alike), so
    their ratio is meaningful on any machine. The float32 baseline is the same architecture
    with binarization off, timed in NCHW and channels-last (the faster counts). ``name`` is
    any model spec or :class:`ModelSource` (a user model keeps its own input shape), or its
    ``to_json()`` form.
    """
    if threads < 1 or repeat < 1:
        raise SofarError(f"threads and repeat must be at least 1, got {threads}, {repeat}")
    source = as_source(name)
    model = source.build(None, dataset).eval()
    packed = pack_model(model)
    fp32 = set_binarization(copy.deepcopy(model), False)
    x = torch.randn(source.input_shape(dataset), generator=torch.manual_seed(0))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fp32_cl = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    runs = {
        "ms_packed": lambda: packed(x_cl),  # the layout it converts to, as fp32 CL gets
        "ms_torch_fp32_nchw": lambda: fp32(x),
        "ms_torch_fp32_channels_last": lambda: fp32_cl(x_cl),
        "ms_torch_binary_sim": lambda: model(x),
    }
    columns = [SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    bar = Progress(*columns, transient=True, disable=not progress)
    with thread_count(threads), torch.inference_mode(), bar:
        bar.add_task(f"{source.name}: packed, torch fp32 and sim in turns ({threads} thread(s))")
        rounds = paired_times_ms(runs, repeat, warmup=2, budget_s=4.0 * len(runs))
    result = {key: float(np.median(times)) for key, times in rounds.items()}
    # per round: fp32 is the better layout of that round, as for the medians
    fp32_rounds = np.minimum(rounds["ms_torch_fp32_nchw"], rounds["ms_torch_fp32_channels_last"])
    round_speedups = fp32_rounds / np.array(rounds["ms_packed"])
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
        "timing": "paired: the sides take turns in every round; medians over rounds",
        "rounds": len(rounds["ms_packed"]),
        "ms_each_round": rounds,
        "speedup_vs_fp32_each_round": round_speedups.tolist(),
        "speedup_vs_fp32_quartiles": list(quartiles(round_speedups)),
        "spread_pct": {key: 100 * (q3 - q1) / result[key]
                       for key, (q1, q3) in ((k, quartiles(v)) for k, v in rounds.items())},
    }
