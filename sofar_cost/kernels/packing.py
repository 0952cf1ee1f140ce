"""Bit-packing of sign tensors into ``uint64`` words along the channel axis.

Sign convention (shared with the tests' torch reference): ``sign(v) = +1 if v >= 0 else
-1`` (so -0.0 maps to +1 and NaN to -1), stored as bit 1 for +1. Channel ``c`` is bit
``c % 64`` of word ``c // 64``; bits past the channel count are 0 in activations *and*
weights, so their XOR is 0 and they never reach a popcount.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._conv_kernel import empty_planes
from .kernel_set import kernels
from .quad_step import CHANNELS

__all__ = ["PackedActivations", "PackedWeights", "n_words", "pack_activations", "pack_weights",
           "packing_source"]

ArrayLike = np.ndarray | torch.Tensor


def n_words(channels: int) -> int:
    """64-bit words needed for ``channels`` sign bits."""
    return (channels + 63) // 64


def to_numpy(x: ArrayLike) -> np.ndarray:
    """Zero-copy view of a CPU float32/float64 tensor; other dtypes become float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return x


@dataclass(frozen=True)
class PackedActivations:
    """Sign bits of an NCHW batch in the kernel's layout, with a zero border of ``padding``.

    Per image and 64-channel word, the bordered ``(H + 2p) x (W + p + right)`` plane is split
    into ``stride x stride`` phase planes of ``Hq x Wq`` words (phase ``(a, b)`` holds bordered
    pixels ``(a + s*i, b + s*j)``), so a strided convolution reads consecutive words for
    consecutive output pixels. ``buffer`` is flat with ``Wq + LANES`` words of slack at the
    end (the kernel reads whole vectors past the last pixel). Border words are 0, which
    the convolution corrects for exactly (zero padding contributes 0, not -1).

    Rows have a left border of ``padding`` but usually no right one (``right = 0``): a tap
    past a row's end reads the next row's left border, just as zero, so rows are shorter
    and the kernel's row-length output planes waste fewer columns. A conv whose output is
    wider than that (padding >= kernel size) asks for ``right`` columns more.
    """

    buffer: np.ndarray
    batch: int
    channels: int
    height: int
    width: int
    padding: int
    stride: int
    right: int = 0

    @property
    def layout(self) -> tuple[int, int, int]:
        """(padding, stride, right): what a conv needs to read these words directly."""
        return self.padding, self.stride, self.right

    @property
    def phase_shape(self) -> tuple[int, int]:
        """(Hq, Wq): the size of one phase plane."""
        return _phase_shape(self.height, self.width, *self.layout)

    @property
    def plane_words(self) -> int:
        """Words per (image, 64-channel word): all phase planes."""
        hq, wq = self.phase_shape
        return self.stride**2 * hq * wq

    @property
    def words(self) -> np.ndarray:
        """[N, words, s*s, Hq, Wq] view of the buffer."""
        hq, wq = self.phase_shape
        size = self.batch * n_words(self.channels) * self.plane_words
        return self.buffer[:size].reshape(
            self.batch, n_words(self.channels), self.stride**2, hq, wq)

    def interior(self) -> np.ndarray:
        """The packed words as plain [N, words, H, W] (a copy; for re-layout and tests)."""
        s, p = self.stride, self.padding
        hq, wq = self.phase_shape
        full = np.zeros((self.batch, n_words(self.channels), hq * s, wq * s), np.uint64)
        for a in range(s):
            for b in range(s):
                full[:, :, a::s, b::s] = self.words[:, :, a * s + b]
        return full[:, :, p : p + self.height, p : p + self.width]

    def with_layout(self, padding: int, stride: int, right: int = 0) -> PackedActivations:
        """Same bits for a convolution of another layout (a copy unless equal)."""
        if (padding, stride, right) == self.layout:
            return self
        packed = _empty_packed(self.batch, self.channels, self.height, self.width, padding,
                               stride, right)
        bordered = np.pad(self.interior(), ((0, 0), (0, 0), (padding,) * 2, (padding, right)))
        for a in range(stride):
            for b in range(stride):
                phase = bordered[:, :, a::stride, b::stride]
                packed.words[:, :, a * stride + b, : phase.shape[2], : phase.shape[3]] = phase
        return packed


def _phase_shape(height: int, width: int, padding: int, stride: int,
                 right: int) -> tuple[int, int]:
    """(Hq, Wq): one phase plane of the zero-bordered image (see :class:`PackedActivations`)."""
    return -(-(height + 2 * padding) // stride), -(-(width + padding + right) // stride)


def _empty_packed(n: int, c: int, h: int, w: int, padding: int, stride: int,
                  right: int) -> PackedActivations:
    """All-zero packed activations of the given geometry, slack included."""
    buffer, _ = empty_planes(n, n_words(c), stride, *_phase_shape(h, w, padding, stride, right))
    return PackedActivations(buffer, n, c, h, w, padding, stride, right)


def pack_activations(x: ArrayLike, padding: int = 0, stride: int = 1,
                     right: int = 0) -> PackedActivations:
    """Pack an [N, C, H, W] float tensor's signs for a conv of this layout (see
    :class:`PackedActivations`; :meth:`PackedBinaryConv2d.layout` gives a layer's).

    Channels-last memory (``torch.channels_last``, or a transposed NHWC array) is packed
    as it lies, with no copy; anything else as contiguous NCHW.
    """
    arr = to_numpy(x)
    if arr.ndim != 4:
        raise ValueError(f"pack_activations expects NCHW input, got shape {arr.shape}")
    if padding < 0 or stride < 1 or right < 0:
        raise ValueError(f"pack_activations: padding={padding}, stride={stride}, "
                         f"right={right} (valid: padding >= 0, stride >= 1, right >= 0)")
    packed = _empty_packed(*arr.shape, padding, stride, right)
    kernels().pack_into(*packing_source(arr), padding, stride, packed.words)
    return packed


def packing_source(arr: np.ndarray) -> tuple[np.ndarray, bool]:
    """(array, channels_last) for the packing kernels: channels-last memory as its C-contiguous
    [N, H, W, C] view (no copy), anything else as contiguous [N, C, H, W]."""
    nhwc = arr.transpose(0, 2, 3, 1)
    if nhwc.flags.c_contiguous:
        return nhwc, True
    return np.ascontiguousarray(arr), False


@dataclass(frozen=True)
class PackedWeights:
    """Conv weights packed for the kernel.

    words: [cout_pad, n_words, kh * kw]: one output channel's tap words are contiguous, so
    four channels' words load once into registers. cout_pad is a multiple of 4 (the kernel
    works on channel quads); a padding channel is all-zero and never returned.
    pad_terms: [kh * kw, cout_pad] int64, ``in_channels - 2 * popcount(tap word)`` = minus
    the tap's weight-sign sum: what an all-zero padding word would wrongly contribute.
    """

    words: np.ndarray
    pad_terms: np.ndarray
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]


def pack_weights(weight: ArrayLike) -> PackedWeights:
    """Pack [Cout, Cin, kh, kw] weights' signs (see :class:`PackedWeights`)."""
    w = to_numpy(weight)
    if w.ndim != 4:
        raise ValueError(f"pack_weights expects [Cout, Cin, kh, kw] weights, got {w.shape}")
    cout, cin, kh, kw = w.shape
    words = n_words(cin)
    bits = np.zeros((cout, kh * kw, words * 64), np.uint8)
    bits[:, :, :cin] = (w >= 0).transpose(0, 2, 3, 1).reshape(cout, kh * kw, cin)
    packed = np.packbits(bits, axis=-1, bitorder="little").view("<u8")  # [cout, taps, words]
    cout_pad = -(-cout // CHANNELS) * CHANNELS
    out_words = np.zeros((cout_pad, words, kh * kw), np.uint64)
    out_words[:cout] = packed.transpose(0, 2, 1)
    pad_terms = np.zeros((kh * kw, cout_pad), np.int64)
    pad_terms[:, :cout] = (cin - 2 * bits.sum(axis=2, dtype=np.int64)).T
    return PackedWeights(out_words, pad_terms, cin, cout, (kh, kw))
