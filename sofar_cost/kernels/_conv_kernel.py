"""Numba kernels: activation packing and the popcount convolution.

Kept separate from the Python-facing classes so the cached machine code only depends on
this file (Numba invalidates a function's cache when its source file changes) and on the
intrinsics it calls. Numba does not notice edits to those (:mod:`.quad_step`,
:mod:`.popcount`, :mod:`.sign_bits`): after changing one, touch this file.

Layout (see :mod:`.packing`): one image's 64-channel word ``k`` is a zero-bordered plane
(rows share one border) split into ``stride x stride`` phase planes of ``Hq x Wq`` words,
so that every tap of a strided convolution reads *consecutive* words for consecutive output
pixels. An output plane is stored with the same row length ``Wq`` (the last ``Wq - Wo``
columns are scratch), which makes "output pixel q reads input word q + offset[tap]" hold
over the whole plane: the convolution runs along chunks of q, 8 pixels x 4 channels per
step, with no per-row setup.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .quad_step import CHANNELS, LANES, WEIGHT_LANES, quad_step
from .sign_bits import sign_word

# Start Numba's threading layer now (~6 ms). A cached function that calls these parallel
# kernels (pack_and_conv) may have been compiled while they came from the cache, and then
# its machine code does not start the threading layer itself: as the first parallel code
# of a process, it called a null pointer (a segfault, seen after the kernels changed).
numba.get_num_threads()

CHUNK = 1024  # most output pixels per task: the chunk's input window stays in L1
TASKS = 16  # conv tasks per call come in multiples of this (see _groups)
PACK_PIXELS = 512  # pixels per packing task


@njit(inline="always")
def _sign_bits(xf, start, step, count):
    """Scalar fallback: bit ``c`` is ``xf[start + c * step] >= 0`` for ``c < count``."""
    bits = np.uint64(0)
    for c in range(count):
        bits |= np.uint64(xf[start + c * step] >= 0) << np.uint64(c)
    return bits


@njit(inline="always")
def _phase_row(out, n, k, hp, pad, stride, phase, width):
    """Where image row ``hp - pad``'s columns ``phase, phase + s, ..`` go in ``out``:
    (that phase plane's row, index of the first of them, how many)."""
    dst = out[n, k, (hp % stride) * stride + (pad + phase) % stride, hp // stride]
    return dst, (pad + phase) // stride, (width - phase + stride - 1) // stride


@njit(inline="always")
def _bit(xf, at, alpha, beta, c):
    """1 where channel ``c``'s value at ``xf[at]`` is ``>= 0``, or, with an ``alpha`` (not
    None), where ``xf[at] * alpha[c] + beta[c] >= 0`` (an eval BatchNorm's output sign)."""
    if alpha is None:
        return np.uint64(xf[at] >= 0)
    return np.uint64(xf[at] * alpha[c] + beta[c] >= 0)


@njit(parallel=True, cache=True)
def pack_kernel(x: np.ndarray, pad: int, stride: int, out: np.ndarray, chans: int = -1,
                alpha: np.ndarray | None = None, beta: np.ndarray | None = None) -> None:
    """Pack sign bits of NCHW ``x`` (C-contiguous) into zeroed ``out`` [N, words, s*s, Hq, Wq].

    Bit ``c % 64`` of word ``c // 64`` is 1 where ``x >= 0`` (with ``alpha``, ``beta``:
    where ``x * alpha[c] + beta[c] >= 0``) for the first ``chans`` channels (all if -1);
    border words and unused high bits stay 0. No fastmath: ``x >= 0`` must treat -0.0 and
    NaN exactly as torch. Eight channels are read per pass along contiguous pixels
    (vectorised compare-and-or), several rows at a time, into a buffer of whole rows that
    is then scattered into the phase planes (row by row, the 28x28 to 7x7 planes packed
    2-5x slower).
    """
    n_img, total, height, width = x.shape
    chans = total if chans < 0 else chans
    words = out.shape[1]
    hw = height * width
    xf = x.reshape(-1)
    rows = max(1, PACK_PIXELS // width)
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
            c = 64 * k + b
            i0 = np.uint64((n * total + c) * hw + h0 * width)
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
                    bits = (_bit(xf, i0 + u, alpha, beta, c)
                            | _bit(xf, i1 + u, alpha, beta, c + 1) << np.uint64(1)
                            | _bit(xf, i2 + u, alpha, beta, c + 2) << np.uint64(2)
                            | _bit(xf, i3 + u, alpha, beta, c + 3) << np.uint64(3)
                            | _bit(xf, i4 + u, alpha, beta, c + 4) << np.uint64(4)
                            | _bit(xf, i5 + u, alpha, beta, c + 5) << np.uint64(5)
                            | _bit(xf, i6 + u, alpha, beta, c + 6) << np.uint64(6)
                            | _bit(xf, i7 + u, alpha, beta, c + 7) << np.uint64(7))
                    buf[j] |= bits << shift
                b += 8
            else:
                for j in range(length):
                    buf[j] |= _bit(xf, i0 + np.uint64(j), alpha, beta, c) << shift
                b += 1
        for h in range(h0, h1):
            src = buf[(h - h0) * width : (h - h0 + 1) * width]
            for phase in range(stride):
                dst, j0, count = _phase_row(out, n, k, h + pad, pad, stride, phase, width)
                for j in range(count):
                    dst[j0 + j] = src[phase + stride * j]


@njit(parallel=True, cache=True)
def pack_nhwc_kernel(x: np.ndarray, pad: int, stride: int, out: np.ndarray) -> None:
    """:func:`pack_kernel` for channels-last input ``x`` [N, H, W, C] (C-contiguous).

    A pixel's 64 channels are contiguous, so one vector compare gives a whole word,
    written straight into its phase plane.
    """
    n_img, height, width, chans = x.shape
    words = out.shape[1]
    xf = x.reshape(-1)
    for task in prange(n_img * height):
        row = task * width * chans
        for k in range(words):
            n_bits = min(64, chans - 64 * k)
            for phase in range(stride):
                dst, j0, count = _phase_row(out, task // height, k, task % height + pad, pad,
                                            stride, phase, width)
                at = row + phase * chans + 64 * k
                if n_bits == 64:
                    for j in range(count):
                        dst[j0 + j] = sign_word(xf, at + j * stride * chans)
                else:
                    for j in range(count):
                        dst[j0 + j] = _sign_bits(xf, at + j * stride * chans, 1, n_bits)


@njit(cache=True)
def chunk_length(length: int) -> int:
    """Output pixels per task: whole vectors, chunks of near-equal length, at most ``CHUNK``.
    (With :func:`quad_step` the chunk length mattered little: on 64ch 56x56, one chunk of
    3192 pixels and four of 800 ran within 1% of each other.)"""
    chunks = (length + CHUNK - 1) // CHUNK
    return ((length + chunks - 1) // chunks + LANES - 1) // LANES * LANES


@njit(cache=True)
def _groups(tasks: int, quads: int) -> int:
    """Channel-quad groups per chunk: split until there are ``TASKS`` tasks or a multiple of
    them (at least one quad per task), so that up to 16 threads get equal shares. (The
    thread count itself is not read: that call keeps Numba from caching the kernel.)"""
    groups = 1
    while (tasks * groups) % TASKS and tasks * groups < 4 * TASKS:
        groups += 1
    return min(groups, quads)


@njit(parallel=True, cache=True)
def conv_kernel(
    xf: np.ndarray,
    in_plane: int,
    wt: np.ndarray,
    offsets: tuple,
    length: int,
    base: np.ndarray,
    row_fix: np.ndarray,
    row_class: np.ndarray,
    out: np.ndarray,
) -> None:
    """Binary conv2d by XOR + popcount, written into ``out`` [N, Cout_pad, plane] int32.

    xf: flat packed input (image n, word k starts at ``(n * words + k) * in_plane``);
    wt: [Cout_pad, words, taps * WEIGHT_LANES] weight words (:func:`kernel_weights`);
    offsets: word offset of each tap (a tuple, so the step unrolls over taps; a stride-1
    square kernel's read from one start per row, see :func:`quad_step`). Output pixel q
    of a plane (``length`` pixels, row length ``Wq``) is
    ``base[c, q % Wq + ...] - 2 * sum popcount``, computed by :func:`quad_step` for 8 pixels
    x 4 channels at a time: each loaded input vector meets four channels' weights (2
    channels measured 75% of the popcount ceiling on the 56x56 layer, 4 channels 82-86%, 8
    far less).

    Tasks are (image, chunk of pixels, group of channel quads), see :func:`chunk_length`
    and :func:`_groups`; within a task the chunk's input window stays in L1 while every
    quad of the group runs over it.

    base[c, j]: ``in_channels * taps`` minus what all-zero padding words in *columns*
    outside the image wrongly add, periodic in ``Wq`` (length at least ``chunk + Wq``);
    row_fix[c, r_cls]: the rest of the correction for rows touching the top/bottom
    padding, applied to rows with ``row_class >= 0``. Zero padding then contributes 0.
    """
    n_img, cout_pad, plane = out.shape
    words = wt.shape[1]
    taps = len(offsets)
    row_len = row_fix.shape[2]
    wf = wt.reshape(-1)
    outf = out.reshape(-1)
    basef = base.reshape(-1)
    quads = cout_pad // CHANNELS
    chunk = chunk_length(length)
    n_chunks = (length + chunk - 1) // chunk
    groups = _groups(n_img * n_chunks, quads)
    for task in prange(n_img * n_chunks * groups):
        n = task // (n_chunks * groups)
        q0 = (task // groups) % n_chunks * chunk
        group = task % groups
        nq = min(chunk, length - q0)  # stepped in whole vectors: planes have slack
        for quad in range(group * quads // groups, (group + 1) * quads // groups):
            c0 = CHANNELS * quad
            dst = (n * cout_pad + c0) * plane + q0
            for k in range(words):
                x_at = (n * words + k) * in_plane + q0
                w_at = (c0 * words + k) * taps
                if k == 0:  # start from the padding-corrected base values
                    src, src_at, src_row = basef, c0 * base.shape[1] + q0 % row_len, base.shape[1]
                else:
                    src, src_at, src_row = outf, dst, plane
                for q in range(0, nq, LANES):
                    quad_step(xf, x_at + q, offsets, wf, w_at, words * taps,
                              src, src_at + q, src_row, outf, dst + q, plane)
            for r in range(q0 // row_len, min((q0 + nq - 1) // row_len + 1, len(row_class))):
                cls = row_class[r]
                if cls >= 0:  # the part of row r inside this chunk
                    lo = max(r * row_len, q0)
                    hi = min((r + 1) * row_len, q0 + nq)
                    for c in range(c0, c0 + CHANNELS):
                        fix = row_fix[c, cls, lo - r * row_len : hi - r * row_len]
                        row = out[n, c, lo:hi]
                        for i in range(hi - lo):
                            row[i] -= fix[i]


def kernel_weights(words: np.ndarray) -> np.ndarray:
    """Packed weights [Cout_pad, words, taps] as :func:`conv_kernel` reads them: each word
    ``WEIGHT_LANES`` times in a row (see :func:`.popcount.weight_lanes`)."""
    if WEIGHT_LANES == 1:
        return words
    return np.ascontiguousarray(np.repeat(words, WEIGHT_LANES, axis=-1))


@njit(cache=True)
def empty_planes(batch: int, words: int, stride: int, hq: int, wq: int):
    """(buffer, planes): a zeroed flat buffer for packed activations and its
    [N, words, s*s, Hq, Wq] view. The buffer has ``Wq + LANES`` words of slack past the
    planes, which :func:`conv_kernel` reads (whole vectors, taps past a row's end)."""
    size = batch * words * stride * stride * hq * wq
    buffer = np.zeros(size + wq + LANES, np.uint64)
    return buffer, buffer[:size].reshape((batch, words, stride * stride, hq, wq))


@njit(cache=True)
def pack_into(x: np.ndarray, channels_last: bool, pad: int, stride: int,
              planes: np.ndarray) -> None:
    """Pack ``x`` ([N, C, H, W], or C-contiguous [N, H, W, C] if ``channels_last``) into
    zeroed ``planes`` with the matching packing kernel."""
    if channels_last:
        pack_nhwc_kernel(x, pad, stride, planes)
    else:
        pack_kernel(x, pad, stride, planes)


@njit(cache=True)
def pack_and_conv(
    x: np.ndarray,
    channels_last: bool,
    pad: int,
    stride: int,
    hq: int,
    wq: int,
    *conv_args,
) -> None:
    """A whole layer call in one entry point: pack ``x`` into phase planes of ``hq x wq``
    words, then :func:`conv_kernel`. Packing in its own call from Python, with the packed
    buffer set up between the calls, added about 7 us per layer (13 against 6 on a tiny
    layer): several percent of a 56x56 layer.

    ``x`` is [N, C, H, W], or [N, H, W, C] if ``channels_last``, C-contiguous either way;
    ``conv_args`` are :func:`conv_kernel`'s arguments after the packed input.
    """
    chans = x.shape[3] if channels_last else x.shape[1]
    buffer, planes = empty_planes(x.shape[0], (chans + 63) // 64, stride, hq, wq)
    pack_into(x, channels_last, pad, stride, planes)
    conv_kernel(buffer, stride * stride * hq * wq, *conv_args)
