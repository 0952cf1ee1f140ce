"""Packed binary conv2d / linear layers with the semantics of torch on sign tensors.

``PackedBinaryConv2d.from_weight(w, stride, padding)(x)`` equals, exactly and as int32,
``torch.nn.functional.conv2d(sign(x), sign(w), stride=stride, padding=padding)`` with
``sign(v) = +1 if v >= 0 else -1`` and zero padding (see :mod:`.packing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._conv_kernel import chunk_length, kernel_weights
from .kernel_set import kernels
from .packing import (
    ArrayLike,
    PackedActivations,
    PackedWeights,
    _phase_shape,
    pack_weights,
    packing_source,
    to_numpy,
)
from .quad_step import LANES

__all__ = [
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
    "binary_conv2d",
    "binary_linear",
    "check_module",
    "check_settings",
]

SUPPORTED = "groups=1, dilation=1, square stride >= 1 and padding >= 0 (zeros)"


def _square(value: int | tuple[int, ...], what: str, name: str) -> int:
    """Accept ``v`` or ``(v, v)``; the kernel uses one stride/padding for both axes."""
    if isinstance(value, int):
        return value
    values = tuple(value)
    if len(values) == 2 and values[0] == values[1]:
        return int(values[0])
    raise ValueError(f"{name}: {what}={value} is not supported by the packed binary conv "
                     f"(supported: {SUPPORTED})")


def check_settings(stride: int | tuple[int, ...], padding: int | str | tuple[int, ...],
                   groups: int, dilation: int | tuple[int, ...], padding_mode: str,
                   name: str) -> tuple[int, int]:
    """The one check of what the packed kernel runs (any kh x kw kernel; groups 1, dilation 1,
    one stride and one zero padding for both axes): ``(stride, padding)``, or a
    ``ValueError`` naming the layer and the setting."""
    if groups != 1:
        raise ValueError(f"{name}: groups={groups} is not supported by the packed binary "
                         f"conv (supported: {SUPPORTED})")
    if _square(dilation, "dilation", name) != 1:
        raise ValueError(f"{name}: dilation={dilation} is not supported by the packed "
                         f"binary conv (supported: {SUPPORTED})")
    if padding_mode != "zeros" or isinstance(padding, str):
        raise ValueError(f"{name}: padding={padding!r}, padding_mode={padding_mode!r} is "
                         f"not supported by the packed binary conv (supported: {SUPPORTED})")
    stride, padding = _square(stride, "stride", name), _square(padding, "padding", name)
    if stride < 1 or padding < 0:
        raise ValueError(f"{name}: stride={stride}, padding={padding} is not supported "
                         f"by the packed binary conv (supported: {SUPPORTED})")
    return stride, padding


def check_module(conv: torch.nn.Conv2d, name: str) -> tuple[int, int]:
    """:func:`check_settings` for a ``torch.nn.Conv2d`` (the engine and ``sofar-cost bench``
    both ask this before running a layer on the packed kernel)."""
    return check_settings(conv.stride, conv.padding, conv.groups, conv.dilation,
                          conv.padding_mode, name)


@dataclass(frozen=True)
class _Plan:
    """Per input size: the packed layout, tap offsets and padding corrections of a layer."""

    layout: tuple[int, int, int]  # (padding, stride, right) of the packed input
    phase_shape: tuple[int, int]  # (Hq, Wq); Wq is also the output row length
    out_hw: tuple[int, int]
    offsets: tuple[int, ...]
    base: np.ndarray  # [cout_pad, longest chunk + Wq] int32
    row_fix: np.ndarray  # [cout_pad, classes, Wq] int32
    row_class: np.ndarray  # [Ho] int64, -1 where no tap reaches the top/bottom padding

    @property
    def length(self) -> int:
        """Output pixels per plane the kernel computes (rows of ``Wq``, scratch included)."""
        return self.out_hw[0] * self.phase_shape[1]

    def kernel_args(self, weights: np.ndarray, out: np.ndarray) -> tuple:
        """The arguments :func:`conv_kernel` takes after the packed input (``weights``:
        :func:`kernel_weights` of the packed weights; ``out``: an output of
        :meth:`PackedBinaryConv2d.empty_output`)."""
        return (weights, self.offsets, self.length, self.base,
                self.row_fix, self.row_class, out.reshape(out.shape[0], out.shape[1], -1))


def _plan(weights: PackedWeights, layout: tuple[int, int, int], height: int, width: int,
          out_hw: tuple[int, int]) -> _Plan:
    """Offsets and corrections: a tap on an all-zero padding word adds ``pad_terms`` (the
    weight-sign sum), which must be removed to get zero padding. Per output column the
    column-padding part is periodic in the row length, so it goes into the initial value
    ``base``; rows touching the top/bottom padding get the remainder in ``row_fix``."""
    kh, kw = weights.kernel_size
    p, s, _ = layout
    hq, wq = _phase_shape(height, width, *layout)
    out_h, out_w = out_hw
    offsets = tuple(((ky % s) * s + kx % s) * hq * wq + (ky // s) * wq + kx // s
                    for ky in range(kh) for kx in range(kw))
    rows = np.arange(out_h)[:, None] * s - p + np.arange(kh)
    row_bad = (rows < 0) | (rows >= height)  # [Ho, kh]
    cols = np.arange(wq)[:, None] * s - p + np.arange(kw)
    col_bad = ((cols < 0) | (cols >= width)) & (np.arange(wq) < out_w)[:, None]  # [Wq, kw]
    terms = weights.pad_terms.reshape(kh, kw, -1)  # [kh, kw, cout_pad]
    col_part = np.einsum("xk,yko->ox", col_bad.astype(np.int64), terms)
    total = weights.in_channels * kh * kw
    longest = chunk_length(out_h * wq)  # as conv_kernel splits the plane
    base = (total - col_part[:, np.arange(longest + wq) % wq]).astype(np.int32)
    patterns, row_class = np.unique(row_bad, axis=0, return_inverse=True)
    row_class = row_class.reshape(-1).astype(np.int64)
    border = [i for i, pattern in enumerate(patterns) if pattern.any()]
    row_fix = np.einsum("ry,xk,yko->orx", patterns[border].astype(np.int64),
                        (~col_bad).astype(np.int64), terms).astype(np.int32)
    renumber = np.full(len(patterns), -1, np.int64)
    renumber[border] = np.arange(len(border))
    if not border:  # the kernel indexes row_fix[c, cls] only for cls >= 0; keep it 3-D
        row_fix = np.zeros((terms.shape[2], 1, wq), np.int32)
    return _Plan(layout, (hq, wq), out_hw, offsets,
                 np.ascontiguousarray(base), np.ascontiguousarray(row_fix),
                 renumber[row_class])


class PackedBinaryConv2d:
    """Binary conv2d whose weights are packed once; calls pack the input and convolve.

    Output: int32 array of shape [N, Cout, Ho, Wo] (NCHW, as torch), a view whose rows are
    ``Wq`` words apart (the kernel's scratch columns sit past ``Wo``).
    ``np.ascontiguousarray`` gives a plain copy if needed.
    """

    def __init__(self, weights: PackedWeights, stride: int = 1, padding: int = 0,
                 name: str = "conv") -> None:
        if stride < 1 or padding < 0:
            raise ValueError(f"{name}: stride={stride}, padding={padding} is not supported "
                             f"by the packed binary conv (supported: {SUPPORTED})")
        self.weights = weights
        self._kernel_weights = kernel_weights(weights.words)
        self.stride = stride
        self.padding = padding
        self.name = name
        self._plans: dict[tuple[int, int], _Plan] = {}

    @classmethod
    def from_weight(cls, weight: ArrayLike, stride: int | tuple[int, int] = 1,
                    padding: int | tuple[int, int] = 0, *, groups: int = 1,
                    dilation: int | tuple[int, int] = 1, padding_mode: str = "zeros",
                    name: str = "conv") -> PackedBinaryConv2d:
        """Pack ``weight`` [Cout, Cin, kh, kw]; unsupported settings raise ``ValueError``."""
        stride, padding = check_settings(stride, padding, groups, dilation, padding_mode, name)
        return cls(pack_weights(weight), stride, padding, name)

    @classmethod
    def from_module(cls, conv: torch.nn.Conv2d, name: str | None = None) -> PackedBinaryConv2d:
        """Pack a ``torch.nn.Conv2d``'s weight with its stride/padding (bias is ignored)."""
        name = name or type(conv).__name__
        return cls(pack_weights(conv.weight), *check_module(conv, name), name)

    @property
    def in_channels(self) -> int:
        return self.weights.in_channels

    @property
    def out_channels(self) -> int:
        return self.weights.out_channels

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        kh, kw = self.weights.kernel_size
        p, s = self.padding, self.stride
        return (height + 2 * p - kh) // s + 1, (width + 2 * p - kw) // s + 1

    def layout(self, width: int) -> tuple[int, int, int]:
        """(padding, stride, right) of the packed input this layer reads without a copy:
        a right border only where the output rows are longer than the packed ones."""
        p, s = self.padding, self.stride
        return p, s, max(0, s * self.output_hw(width, width)[1] - width - p)

    def __call__(self, x: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """Convolve a float NCHW batch (signs taken by the packing, in the same Numba call);
        ``out``: see :meth:`accumulate`."""
        arr = to_numpy(x)
        return self.output_view(self.accumulate(arr, out), arr.shape[2], arr.shape[3])

    def accumulate(self, x: ArrayLike, out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`__call__`'s result as the kernel wrote it: the C-contiguous
        [N, Cout_pad, rows, Wq] int32 buffer (:meth:`empty_output`) whose top-left
        [N, Cout, Ho, Wo] is the output. The engine's fused passes read it this way: a
        contiguous row reads as one vector, the [N, Cout, Ho, Wo] view's rows did not.

        ``out``: that buffer to write into (reused, as the engine reuses its buffers); by
        default a new one."""
        arr = to_numpy(x)
        if arr.ndim != 4 or arr.shape[1] != self.in_channels:
            raise ValueError(f"{self.name}: expected input [N, {self.in_channels}, H, W], "
                             f"got {tuple(arr.shape)}")
        plan = self._plan_for(arr.shape[2], arr.shape[3])
        if out is None:
            out = self.empty_output(arr.shape[0], plan)
        else:
            shape = self.output_shape(arr.shape[0], plan)
            if out.shape != shape or out.dtype != np.int32 or not out.flags.c_contiguous:
                raise ValueError(f"{self.name}: out must be a C-contiguous int32 array of shape "
                                 f"{shape} (empty_output), got {out.dtype} {tuple(out.shape)}")
        source, channels_last = packing_source(arr)
        kernels().pack_and_conv(source, channels_last, *plan.layout[:2], *plan.phase_shape,
                                *plan.kernel_args(self._kernel_weights, out))
        return out

    def forward_packed(self, xp: PackedActivations) -> np.ndarray:
        """Convolve already-packed activations (re-laid out if not in :meth:`layout`)."""
        if xp.channels != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channels, "
                             f"got packed activations with {xp.channels}")
        plan = self._plan_for(xp.height, xp.width)
        xp = xp.with_layout(*plan.layout)
        out = self.empty_output(xp.batch, plan)
        kernels().conv_kernel(xp.buffer, xp.plane_words,
                              *plan.kernel_args(self._kernel_weights, out))
        return self.output_view(out, xp.height, xp.width)

    def output_view(self, out: np.ndarray, height: int, width: int) -> np.ndarray:
        """The [N, Cout, Ho, Wo] output (a view) in the kernel's ``out`` for an input size."""
        out_h, out_w = self.output_hw(height, width)
        return out[:, : self.out_channels, :out_h, :out_w]

    def _plan_for(self, height: int, width: int) -> _Plan:
        """The cached plan for this input size (a clear error if the input is too small)."""
        plan = self._plans.get((height, width))
        if plan is None:
            out_h, out_w = self.output_hw(height, width)
            if out_h < 1 or out_w < 1:
                raise ValueError(f"{self.name}: input {height}x{width} is smaller than the "
                                 f"kernel {self.weights.kernel_size} with padding "
                                 f"{self.padding}")
            plan = self._plans[height, width] = _plan(self.weights, self.layout(width),
                                                      height, width, (out_h, out_w))
        return plan

    def empty_output(self, batch: int, plan: _Plan) -> np.ndarray:
        """The kernel's int32 output, C-contiguous [N, Cout_pad, rows, Wq]: ``Ho`` rows of
        ``Wq`` (scratch past ``Wo``) and as many more as the last whole vector of ``LANES``
        pixels reaches into."""
        return np.empty(self.output_shape(batch, plan), np.int32)

    def output_shape(self, batch: int, plan: _Plan) -> tuple[int, int, int, int]:
        """The shape of :meth:`empty_output`."""
        wq = plan.phase_shape[1]
        written = -(-plan.length // LANES) * LANES  # the kernel writes whole vectors
        return batch, self.weights.words.shape[0], -(-written // wq), wq


class PackedBinaryLinear:
    """Binary linear layer: ``sign(x) @ sign(w).T`` as int32, a 1x1 conv on 1x1 images."""

    def __init__(self, conv: PackedBinaryConv2d) -> None:
        self.conv = conv

    @classmethod
    def from_weight(cls, weight: ArrayLike, name: str = "linear") -> PackedBinaryLinear:
        """Pack ``weight`` [out_features, in_features]."""
        w = to_numpy(weight)
        if w.ndim != 2:
            raise ValueError(f"{name}: expected [out, in] weights, got {w.shape}")
        return cls(PackedBinaryConv2d.from_weight(w[:, :, None, None], name=name))

    @property
    def in_features(self) -> int:
        return self.conv.in_channels

    @property
    def out_features(self) -> int:
        return self.conv.out_channels

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """[N, in_features] floats -> [N, out_features] int32."""
        arr = to_numpy(x)
        if arr.ndim != 2 or arr.shape[1] != self.in_features:
            raise ValueError(f"{self.conv.name}: expected input [N, {self.in_features}], "
                             f"got {tuple(arr.shape)}")
        return np.ascontiguousarray(self.conv(arr[:, :, None, None])[:, :, 0, 0])


def binary_conv2d(x: ArrayLike, weight: ArrayLike, stride: int = 1,
                  padding: int = 0) -> np.ndarray:
    """One-off binary conv (packs the weights on every call; keep a layer to reuse them)."""
    return PackedBinaryConv2d.from_weight(weight, stride, padding)(x)


def binary_linear(x: ArrayLike, weight: ArrayLike) -> np.ndarray:
    """One-off binary linear layer."""
    return PackedBinaryLinear.from_weight(weight)(x)
