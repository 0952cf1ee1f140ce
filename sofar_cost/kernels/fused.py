"""Numba kernels that fuse the float glue around packed binary convs (used by the engine).

- :func:`affine_kernel`: a binary conv's int32 result times a per-channel scale plus a shift
  (weight scale, bias and a folded BN), plus an optional residual, in one NCHW pass.
- :func:`affine_pack_kernel`: the same, also packing the result's signs for the next conv
  (a Bi-Real unit's output feeds the next unit's sign and its shortcut).
- :func:`affine_maxpool_relu_kernel`: BN -> MaxPool(2) -> ReLU in one pass (DenseNet
  transition), without writing the BN output.
- :func:`classifier_head_kernel`: [BN] [-> ReLU] -> global average pool -> float linear layer,
  the classifier head, in one call.

(A DenseNet layer's BN + sign + packing of its concatenation so far is one
:func:`.pack_kernel` call with the BN's ``alpha``, ``beta``: no BN output is written.)

Affines are ``x * alpha[c] + beta[c]`` with ``alpha``, ``beta`` computed as torch's eval BN
computes them, so signs match torch's BN output (see :func:`sofar_cost.engine.bn_affine`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._conv_kernel import pack_kernel
from .transpose import BLOCK, transpose_block


@njit(inline="always")
def _affine_plane(acc, scale, shift, residual, out, in_place, n, c):
    """One channel plane of :func:`affine_kernel`. The int32 sum converts to float32 exactly
    (it is far below 2^24), so float32 models compute in float32 (twice as fast as the
    float64 that int32 * float32 promotes to), float64 ones in float64."""
    s, z = scale[c], shift[c]
    for h in range(out.shape[2]):
        src, dst = acc[n, c, h], out[n, c, h]
        if in_place:  # one array read and written: no aliasing for LLVM to check
            for w in range(out.shape[3]):
                dst[w] = np.float32(src[w]) * s + z + dst[w]
        elif residual is None:
            for w in range(out.shape[3]):
                dst[w] = np.float32(src[w]) * s + z
        else:
            res = residual[n, c, h]
            for w in range(out.shape[3]):
                dst[w] = np.float32(src[w]) * s + z + res[w]


@njit(parallel=True, cache=True)
def affine_kernel(acc: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                  residual: np.ndarray | None, out: np.ndarray, in_place: bool) -> None:
    """``out[n, c] = acc[n, c] * scale[c] + shift[c] (+ residual[n, c])``, int32 -> float in
    one NCHW pass (``out`` may be a channel slice of a larger buffer). ``acc`` is the
    conv kernel's C-contiguous output (:meth:`.PackedBinaryConv2d.empty_output`), of which
    the top-left ``out.shape`` is read: its rows read as contiguous vectors (through a
    strided [N, C, Ho, Wo] view the pass took 3x as long). Numba compiles the
    ``residual=None`` call without the residual branch.

    ``in_place``: ``out`` already holds the residual (``residual`` is then None), and the
    result overwrites it: one float buffer instead of two, which stays in cache from one
    unit to the next (a packed bireal18 forward after a float one: its output passes took
    0.49 ms against 0.61)."""
    n_img, chans = out.shape[:2]
    for task in prange(n_img * chans):
        _affine_plane(acc, scale, shift, residual, out, in_place, task // chans, task % chans)


@njit(cache=True)
def affine_pack_kernel(acc: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                       residual: np.ndarray | None, out: np.ndarray, in_place: bool, pad: int,
                       stride: int, planes: np.ndarray) -> None:
    """:func:`affine_kernel` into C-contiguous ``out``, then the signs of what it wrote (the
    stored values, as torch takes them) packed into zeroed ``planes`` [N, words, s*s, Hq, Wq]
    for the next binary conv (its layout ``pad``, ``stride``) by :func:`.pack_kernel`, which
    reads several rows of a plane as one run: the next layer's call packs nothing. (A
    per-row single pass, value, store and bit per channel, measured 2x slower; packing row
    by row 2-5x slower on the 28x28 to 7x7 planes.)"""
    affine_kernel(acc, scale, shift, residual, out, in_place)
    pack_kernel(out, pad, stride, planes)


@njit(parallel=True, cache=True)
def affine_maxpool_relu_kernel(x: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                               out: np.ndarray) -> None:
    """``out = relu(maxpool2x2(x * alpha[c] + beta[c]))`` for NCHW ``x`` (any strides);
    ``out`` is [N, C, H // 2, W // 2], as ``nn.MaxPool2d(2)`` (odd edges dropped)."""
    n_img, chans, out_h, out_w = out.shape
    for task in prange(n_img * chans):
        n, c = task // chans, task % chans
        a, z = alpha[c], beta[c]
        for i in range(out_h):
            top, bottom, dst = x[n, c, 2 * i], x[n, c, 2 * i + 1], out[n, c, i]
            for j in range(out_w):
                best = max(max(top[2 * j] * a + z, top[2 * j + 1] * a + z),
                           max(bottom[2 * j] * a + z, bottom[2 * j + 1] * a + z))
                dst[j] = max(best, 0.0)


@njit(parallel=True, cache=True)
def avgpool2_kernel(x: np.ndarray, out: np.ndarray) -> None:
    """``out = avg_pool2d(x, 2)`` for NCHW ``x`` (any strides); ``out`` [N, C, H // 2, W // 2]
    (torch's single-thread NCHW average pool took 0.35 ms on 64x56x56, this one pass)."""
    n_img, chans, out_h, out_w = out.shape
    for task in prange(n_img * chans):
        n, c = task // chans, task % chans
        for i in range(out_h):
            top, bottom, dst = x[n, c, 2 * i], x[n, c, 2 * i + 1], out[n, c, i]
            for j in range(out_w):
                dst[j] = (top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1]) / 4


@njit(inline="always")
def _larger(a, b, zero):
    """``a`` where ``a > b``, else ``b`` (one compare-and-select lane-wise when vectorised),
    plus ``zero`` (0.0 in the array's own dtype). Without the addition LLVM turns
    ``v[k] = _larger(x[k], v[k])`` into a store of ``x[k]`` only where it is larger: a
    masked store, which AVX2 CPUs run microcoded (the AVX2 build of the stem max-pool took
    4x as long as with the addition, the AVX-512 build 1.1x). The sum is a new value that
    LLVM may not drop (adding 0.0 turns -0.0 into 0.0), so every lane is stored. It changes
    no value here: the max-pool starts from 0 (its ReLU), and max(-0.0, 0.0) is 0.0."""
    return (a if a > b else b) + zero


@njit(parallel=True, cache=True)
def relu_maxpool_nhwc_kernel(x: np.ndarray, size: int, stride: int, pad: int,
                             out: np.ndarray) -> None:
    """``out = maxpool(relu(x))`` (square window, implicit -inf padding as torch) from
    channels-last ``x`` [N, H, W, C] into NCHW ``out``, so the first packed unit reads
    contiguous NCHW with no copy. ReLU after the max is the same (both are monotone).

    Separable, per output row: the max over the window's input rows, one long contiguous
    loop, then over each output pixel's columns, then the transpose to NCHW. Unsigned
    indices keep the loops vectorised (no negative-index wraparound). On the ImageNet stem
    (112x112x64) 0.32 ms against 0.40 for a 3x3 window loop per output pixel (AVX-512);
    the max steps as :func:`_larger` writes them: 0.9x that time, the AVX2 build 0.25x."""
    n_img, height, width, chans = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    xf, outf = x.reshape(-1), out.reshape(-1)
    row_len = width * chans
    for task in prange(n_img * out_h):
        n, i = task // out_h, task % out_h
        # every window holds an input row and column (pad <= size // 2); relu: its first one
        # is compared with 0, not -inf, instead of zeroing the buffers first
        rows = np.empty(row_len, x.dtype)
        zero = x.dtype.type(0)
        h0 = max(i * stride - pad, 0)
        for h in range(h0, min(i * stride - pad + size, height)):
            at = np.uint64((n * height + h) * row_len)
            for k in range(row_len):
                u = np.uint64(k)
                rows[u] = _larger(xf[at + u], rows[u] if h > h0 else zero, zero)
        tile = np.empty(out_w * chans, x.dtype)
        for j in range(out_w):
            dst = np.uint64(j * chans)
            w0 = max(j * stride - pad, 0)
            for w in range(w0, min(j * stride - pad + size, width)):
                src = np.uint64(w * chans)
                for c in range(chans):
                    u = np.uint64(c)
                    tile[dst + u] = _larger(rows[src + u], tile[dst + u] if w > w0 else zero,
                                            zero)
        # the tile [out_w, chans] into row i of every channel plane: 8x8 blocks in registers,
        # the edges (widths and channel counts not a multiple of 8) element by element
        plane, at = out_h * out_w, (n * chans * out_h + i) * out_w
        whole_c, whole_j = chans - chans % BLOCK, out_w - out_w % BLOCK
        for c0 in range(0, whole_c, BLOCK):
            for j0 in range(0, whole_j, BLOCK):
                transpose_block(tile, j0 * chans + c0, chans, outf, at + c0 * plane + j0, plane)
        for c in range(chans):
            for j in range(whole_j if c < whole_c else 0, out_w):
                outf[np.uint64(at + c * plane + j)] = tile[np.uint64(j * chans + c)]


@njit(cache=True, fastmath={"reassoc", "contract"})
def classifier_head_kernel(x: np.ndarray, alpha: np.ndarray | None, beta: np.ndarray | None,
                           relu: bool, weight: np.ndarray, bias: np.ndarray,
                           out: np.ndarray) -> None:
    """``out = linear(mean over pixels of [relu](x * alpha[c] + beta[c]), weight, bias)``.

    ``x`` [N, C, H, W] in any layout; ``weight`` [K, C], ``bias`` [K], ``out`` [N, K]. Each
    weight row is read once for all images. At batch 1 torch's linear layer (MKL) took 0.34 ms
    for 512 -> 1000 with its weights out of cache (after a 32 MB pass; 0.08 ms hot), these
    dot products 0.08 ms: they stream the weights at memory speed. ``reassoc`` lets the dot
    products vectorise; the float sums then differ from torch's in the last bits only (no
    sign is taken of them).
    """
    n_img, chans, height, width = x.shape
    pooled = np.empty((n_img, chans), weight.dtype)
    for n in range(n_img):
        for c in range(chans):
            total = 0.0
            for h in range(height):
                for w in range(width):
                    v = x[n, c, h, w]
                    if alpha is not None:
                        v = v * alpha[c] + beta[c]
                    if relu and v < 0:
                        v = 0
                    total += v
            pooled[n, c] = total / (height * width)
    for k in range(weight.shape[0]):
        row = weight[k]
        for n in range(n_img):
            p = pooled[n]
            dot = np.float32(0)  # float64 weights make it float64 (Numba unifies)
            for c in range(chans):
                dot += row[c] * p[c]
            out[n, k] = dot + bias[k]
