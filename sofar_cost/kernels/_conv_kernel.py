"""Numba kernels: activation packing and the popcount convolution.

Kept separate from the Python-facing classes so the cached machine code only depends on
this file (Numba invalidates a function's cache when its source file changes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .popcount import load_words, popcount


@njit(parallel=True, cache=True)
def pack_nchw_kernel(x: np.ndarray, pad: int, out: np.ndarray) -> None:
    """Pack sign bits of ``x`` [N, C, H, W] into zeroed ``out`` [N, H+2p, W+2p, words].

    Bit ``c % 64`` of word ``c // 64`` is 1 where ``x >= 0``. Border words and unused
    high bits stay 0. No fastmath: ``x >= 0`` must treat -0.0 and NaN exactly as torch.
    The innermost loop runs along a contiguous image row so it vectorises.
    """
    n_img, chans, height, width = x.shape
    words = out.shape[3]
    for task in prange(n_img * height):
        n = task // height
        h = task % height
        buf = np.empty(width, np.uint64)
        for k in range(words):
            buf[:] = 0
            for b in range(min(64, chans - 64 * k)):
                row = x[n, 64 * k + b, h]
                for w in range(width):
                    buf[w] |= np.uint64(row[w] >= 0) << np.uint64(b)
            for w in range(width):
                out[n, h + pad, w + pad, k] = buf[w]


@njit(parallel=True, cache=True, fastmath=True)
def conv_kernel(
    xp: np.ndarray,
    wp: np.ndarray,
    pad_terms: np.ndarray,
    offsets: tuple,
    kernel_hw: tuple[int, int],
    stride: int,
    pad: int,
    in_channels: int,
    block: int,
    out: np.ndarray,
) -> None:
    """Binary conv2d by XOR + popcount on packed words, written into ``out`` [N, Ho, Wo, Cout].

    xp: [N, Hp, Wp, words] padded packed input; wp: [words, taps, Cout_pad] packed weights;
    pad_terms: [taps, Cout_pad], what an all-zero padding word wrongly contributes per tap;
    offsets: flat word offset of each tap inside the padded image, a tuple so that its
    length is a compile-time constant: the tap loop is then fully unrolled, leaving the
    output-channel loop innermost, which LLVM vectorises (each weight vector is XORed
    with broadcast activation words of four output pixels).

    Unused bits are 0 in both operands, so each (tap, word) adds ``bits - 2 * popcount``
    over real channels only and a pixel's sum is ``in_channels * taps - 2 * acc``. A
    zero-padding tap must contribute 0, so its ``pad_terms`` entry is subtracted at
    border pixels. One parallel task is one output row times one block of channels.
    """
    n_img, hp, wpad, words = xp.shape
    out_h, out_w, cout = out.shape[1], out.shape[2], out.shape[3]
    kh, kw = kernel_hw
    height, width = hp - 2 * pad, wpad - 2 * pad
    taps = len(offsets)
    cpad = wp.shape[2]
    n_blocks = cpad // block
    xf = xp.reshape(-1)
    wf = wp.reshape(-1)
    for task in prange(n_img * out_h * n_blocks):
        c0 = (task % n_blocks) * block
        row = task // n_blocks
        n = row // out_h
        oy = row % out_h
        # four output pixels per pass share each weight load; past the row end the last
        # pixel is recomputed into the spare rows ``acc[out_w:]``
        acc = np.zeros((out_w + 3, block), np.int64)
        row_base = (n * hp + oy * stride) * wpad * words
        step = stride * words
        for ox in range(0, out_w, 4):
            base0 = row_base + ox * step
            base1 = row_base + min(ox + 1, out_w - 1) * step
            base2 = row_base + min(ox + 2, out_w - 1) * step
            base3 = row_base + min(ox + 3, out_w - 1) * step
            acc0 = acc[ox]
            acc1 = acc[ox + 1]
            acc2 = acc[ox + 2]
            acc3 = acc[ox + 3]
            for k in range(words):
                wbase = k * taps * cpad + c0
                x0 = load_words(xf, base0 + k, offsets)
                x1 = load_words(xf, base1 + k, offsets)
                x2 = load_words(xf, base2 + k, offsets)
                x3 = load_words(xf, base3 + k, offsets)
                for c in range(block):
                    s0 = 0
                    s1 = 0
                    s2 = 0
                    s3 = 0
                    for t in range(taps):
                        # unsigned index: skips Numba's negative-index wraparound, which
                        # would otherwise turn the contiguous loads into gathers
                        w_word = wf[np.uint64(wbase + t * cpad + c)]
                        s0 += popcount(x0[t] ^ w_word)
                        s1 += popcount(x1[t] ^ w_word)
                        s2 += popcount(x2[t] ^ w_word)
                        s3 += popcount(x3[t] ^ w_word)
                    acc0[c] += s0
                    acc1[c] += s1
                    acc2[c] += s2
                    acc3[c] += s3
        # epilogue: contiguous along channels because ``out`` is channels-last
        total = in_channels * taps
        n_valid = min(block, cout - c0)
        iy0 = oy * stride - pad
        row_border = iy0 < 0 or iy0 + kh > height
        for ox in range(out_w):
            out_px = out[n, oy, ox, c0 : c0 + n_valid]
            acc_px = acc[ox]
            for c in range(n_valid):
                out_px[c] = total - 2 * acc_px[c]
            ix0 = ox * stride - pad
            if row_border or ix0 < 0 or ix0 + kw > width:
                for ky in range(kh):
                    for kx in range(kw):
                        iy = iy0 + ky
                        ix = ix0 + kx
                        if iy < 0 or iy >= height or ix < 0 or ix >= width:
                            pad_px = pad_terms[ky * kw + kx, c0 : c0 + n_valid]
                            for c in range(n_valid):
                                out_px[c] -= pad_px[c]
