"""Numba kernels: activation packing and the popcount convolution.

Kept separate from the Python-facing classes so the cached machine code only depends on
this file (Numba invalidates a function's cache when its source file changes).

Layout (see :mod:`.packing`): one image's 64-channel word ``k`` is a zero-bordered plane
split into ``stride x stride`` phase planes of ``Hq x Wq`` words, so that every tap of a
strided convolution reads *consecutive* words for consecutive output pixels. An output
plane is stored with the same row length ``Wq`` (the last ``Wq - Wo`` columns are scratch),
which makes "output pixel q reads input word q + offset[tap]" hold over the whole plane:
the convolution is one long vectorisable loop over q, with no per-row setup.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .popcount import load_words, popcount

CHUNK = 512  # output pixels per pass: two channels' int32 results stay in L1


@njit(parallel=True, cache=True)
def pack_kernel(x: np.ndarray, pad: int, stride: int, out: np.ndarray) -> None:
    """Pack sign bits of ``x`` [N, C, H, W] into zeroed ``out`` [N, words, s*s, Hq, Wq].

    Bit ``c % 64`` of word ``c // 64`` is 1 where ``x >= 0``; border words and unused high
    bits stay 0. No fastmath: ``x >= 0`` must treat -0.0 and NaN exactly as torch. Eight
    channels are read per pass along contiguous pixels (vectorised compare-and-or), into a
    buffer of whole rows that is then scattered into the phase planes.
    """
    n_img, chans, height, width = x.shape
    words = out.shape[1]
    s = stride
    hw = height * width
    xf = x.reshape(-1)
    rows = max(1, CHUNK // width)
    n_chunks = (height + rows - 1) // rows
    plane = np.uint64(hw)
    for task in prange(n_img * words * n_chunks):
        n = task // (words * n_chunks)
        k = (task // n_chunks) % words
        h0 = (task % n_chunks) * rows
        h1 = min(h0 + rows, height)
        length = (h1 - h0) * width
        buf = np.zeros(length, np.uint64)
        n_bits = min(64, chans - 64 * k)
        b = 0
        while b < n_bits:
            # unsigned offsets: no negative-index wraparound, so loads stay contiguous
            i0 = np.uint64((n * chans + 64 * k + b) * hw + h0 * width)
            shift = np.uint64(b)
            if n_bits - b >= 8:
                i1 = i0 + plane
                i2 = i1 + plane
                i3 = i2 + plane
                i4 = i3 + plane
                i5 = i4 + plane
                i6 = i5 + plane
                i7 = i6 + plane
                for j in range(length):
                    u = np.uint64(j)
                    bits = (np.uint64(xf[i0 + u] >= 0)
                            | np.uint64(xf[i1 + u] >= 0) << np.uint64(1)
                            | np.uint64(xf[i2 + u] >= 0) << np.uint64(2)
                            | np.uint64(xf[i3 + u] >= 0) << np.uint64(3)
                            | np.uint64(xf[i4 + u] >= 0) << np.uint64(4)
                            | np.uint64(xf[i5 + u] >= 0) << np.uint64(5)
                            | np.uint64(xf[i6 + u] >= 0) << np.uint64(6)
                            | np.uint64(xf[i7 + u] >= 0) << np.uint64(7))
                    buf[j] |= bits << shift
                b += 8
            else:
                for j in range(length):
                    buf[j] |= np.uint64(xf[i0 + np.uint64(j)] >= 0) << shift
                b += 1
        for h in range(h0, h1):
            hp = h + pad
            src = buf[(h - h0) * width : (h - h0 + 1) * width]
            for phase in range(s):  # input columns w with (w + pad) % s == (pad + phase) % s
                dst = out[n, k, (hp % s) * s + (pad + phase) % s, hp // s]
                j0 = (pad + phase) // s
                for j in range((width - phase + s - 1) // s):
                    dst[j0 + j] = src[phase + s * j]


@njit(inline="always")
def _pair_counts(xf, base, offsets, w0, w1):
    """Popcounts of one output pixel's taps against two channels' weight words."""
    xs = load_words(xf, base, offsets)
    s0 = 0
    s1 = 0
    for t in range(len(offsets)):
        s0 += popcount(xs[t] ^ w0[t])
        s1 += popcount(xs[t] ^ w1[t])
    return s0, s1


@njit(parallel=True, cache=True, fastmath=True)
def conv_kernel(
    xf: np.ndarray,
    in_plane: int,
    wt: np.ndarray,
    offsets: tuple,
    tap_index: tuple,
    out_rows: int,
    base: np.ndarray,
    row_fix: np.ndarray,
    row_class: np.ndarray,
    out: np.ndarray,
) -> None:
    """Binary conv2d by XOR + popcount, written into ``out`` [N, Cout_pad, plane] int32.

    xf: flat packed input (image n, word k starts at ``(n * words + k) * in_plane``);
    wt: [Cout_pad, words, taps] weight words; offsets: word offset of each tap, a tuple so
    that the tap loop unrolls (``tap_index`` is ``(0, .., taps - 1)``). Output pixel q of a
    plane (row length ``Wq``) is ``base[c, q % Wq + ...] - 2 * sum popcount``, with the vector
    loop running along q across 8 pixels while 2 channels' weights sit in registers.

    base[c, j]: ``in_channels * taps`` minus what all-zero padding words in *columns*
    outside the image wrongly add, periodic in ``Wq`` (length ``CHUNK + Wq``);
    row_fix[c, r_cls]: the rest of the correction for rows touching the top/bottom
    padding, applied to rows with ``row_class >= 0``. Zero padding then contributes 0.
    """
    n_img, cout_pad = out.shape[0], out.shape[1]
    words = wt.shape[1]
    taps = len(offsets)
    row_len = row_fix.shape[2]
    wf = wt.reshape(-1)
    length = out_rows * row_len
    pairs = cout_pad // 2
    for task in prange(n_img * pairs):
        n = task // pairs
        c0 = 2 * (task % pairs)
        out0 = out[n, c0]
        out1 = out[n, c0 + 1]
        base0 = base[c0]
        base1 = base[c0 + 1]
        for q0 in range(0, length, CHUNK):
            nq = (min(CHUNK, length - q0) + 7) // 8 * 8  # whole vectors; planes have slack
            acc0 = out0[q0 : q0 + nq]
            acc1 = out1[q0 : q0 + nq]
            ph = q0 % row_len
            init0 = base0[ph : ph + nq]
            init1 = base1[ph : ph + nq]
            for k in range(words):
                w0 = load_words(wf, (c0 * words + k) * taps, tap_index)
                w1 = load_words(wf, ((c0 + 1) * words + k) * taps, tap_index)
                start = (n * words + k) * in_plane + q0
                if k == 0:
                    for q in range(nq):
                        s0, s1 = _pair_counts(xf, start + q, offsets, w0, w1)
                        acc0[q] = init0[q] - 2 * s0
                        acc1[q] = init1[q] - 2 * s1
                else:
                    for q in range(nq):
                        s0, s1 = _pair_counts(xf, start + q, offsets, w0, w1)
                        acc0[q] -= 2 * s0
                        acc1[q] -= 2 * s1
        for r in range(out_rows):
            cls = row_class[r]
            if cls >= 0:
                row0 = out0[r * row_len : (r + 1) * row_len]
                row1 = out1[r * row_len : (r + 1) * row_len]
                fix0 = row_fix[c0, cls]
                fix1 = row_fix[c0 + 1, cls]
                for i in range(row_len):
                    row0[i] -= fix0[i]
                    row1[i] -= fix1[i]
