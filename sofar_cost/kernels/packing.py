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

from ._conv_kernel import pack_nchw_kernel

__all__ = ["PackedActivations", "PackedWeights", "n_words", "pack_activations", "pack_weights"]

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
    """Sign bits of an NCHW batch, stored NHWC with a zero border of ``padding`` pixels.

    ``words`` has shape [N, H + 2p, W + 2p, n_words(channels)]. The border words are 0,
    which the convolution corrects for exactly (zero padding contributes 0, not -1).
    """

    words: np.ndarray
    channels: int
    padding: int

    @property
    def height(self) -> int:
        return self.words.shape[1] - 2 * self.padding

    @property
    def width(self) -> int:
        return self.words.shape[2] - 2 * self.padding

    def with_padding(self, padding: int) -> PackedActivations:
        """Same bits with a different zero border (a copy unless already ``padding``)."""
        if padding == self.padding:
            return self
        p = self.padding
        interior = self.words[:, p : p + self.height, p : p + self.width]
        border = ((0, 0), (padding, padding), (padding, padding), (0, 0))
        return PackedActivations(np.pad(interior, border), self.channels, padding)


def pack_activations(x: ArrayLike, padding: int = 0) -> PackedActivations:
    """Pack an NCHW float tensor's signs (see module docstring); multithreaded in Numba."""
    arr = np.ascontiguousarray(to_numpy(x))
    if arr.ndim != 4:
        raise ValueError(f"pack_activations expects NCHW input, got shape {arr.shape}")
    n, c, h, w = arr.shape
    words = np.zeros((n, h + 2 * padding, w + 2 * padding, n_words(c)), np.uint64)
    pack_nchw_kernel(arr, padding, words)
    return PackedActivations(words, c, padding)


@dataclass(frozen=True)
class PackedWeights:
    """Conv weights packed for the kernel.

    words: [n_words, kh * kw, cout_pad] so that for one (word, tap) the output channels are
    contiguous (vectorised innermost loop); cout_pad is a multiple of ``block``, and the
    extra channels are all-zero and never written out.
    pad_terms: [kh * kw, cout_pad] int64, ``in_channels - 2 * popcount(tap word)`` = minus
    the tap's weight-sign sum: what an all-zero padding word would wrongly contribute.
    """

    words: np.ndarray
    pad_terms: np.ndarray
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    block: int


def choose_block(out_channels: int) -> int:
    """Output channels per task: large blocks amortise per-pixel setup, 8 lanes minimum."""
    block = 8
    while block < 128 and block < out_channels:
        block *= 2
    return block


def pack_weights(weight: ArrayLike, block: int | None = None) -> PackedWeights:
    """Pack [Cout, Cin, kh, kw] weights' signs (see :class:`PackedWeights`)."""
    w = to_numpy(weight)
    if w.ndim != 4:
        raise ValueError(f"pack_weights expects [Cout, Cin, kh, kw] weights, got {w.shape}")
    cout, cin, kh, kw = w.shape
    block = block or choose_block(cout)
    words = n_words(cin)
    bits = np.zeros((cout, kh * kw, words * 64), np.uint8)
    bits[:, :, :cin] = (w >= 0).transpose(0, 2, 3, 1).reshape(cout, kh * kw, cin)
    packed = np.packbits(bits, axis=-1, bitorder="little").view("<u8")  # [cout, taps, words]
    cout_pad = -(-cout // block) * block
    out_words = np.zeros((words, kh * kw, cout_pad), np.uint64)
    out_words[:, :, :cout] = packed.transpose(2, 1, 0)
    pad_terms = np.zeros((kh * kw, cout_pad), np.int64)
    pad_terms[:, :cout] = (cin - 2 * bits.sum(axis=2, dtype=np.int64)).T
    return PackedWeights(out_words, pad_terms, cin, cout, (kh, kw), block)
