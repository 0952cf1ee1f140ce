"""Numba kernels that fuse the float glue around packed binary convs (used by the engine).

- :func:`pack_affine_kernel`: the signs of a per-channel affine (an eval-mode BatchNorm) of
  the first channels of an NCHW buffer, packed for a conv: BN + sign + packing in one read,
  with no BN output written. A DenseNet layer reads its whole concatenation this way.
- :func:`affine_kernel`: a binary conv's int32 result times a per-channel scale plus a shift
  (weight scale, bias and a folded BN), plus an optional residual, in one NCHW pass.
- :func:`affine_pack_kernel`: the same, also packing the result's signs for the next conv
  (a Bi-Real unit's output feeds the next unit's sign and its shortcut).
- :func:`affine_maxpool_relu_kernel`: BN -> MaxPool(2) -> ReLU in one pass (DenseNet
  transition), without writing the BN output.

Affines are ``x * alpha[c] + beta[c]`` with ``alpha``, ``beta`` computed as torch's eval BN
computes them, so signs match torch's BN output (see :func:`sofar_cost.engine.bn_affine`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._conv_kernel import _phase_row


@njit(parallel=True, cache=True)
def pack_affine_kernel(x: np.ndarray, chans: int, alpha: np.ndarray, beta: np.ndarray,
                       pad: int, stride: int, out: np.ndarray) -> None:
    """Pack bits ``x[n, c] * alpha[c] + beta[c] >= 0`` of channels ``c < chans`` of NCHW
    ``x`` (any strides) into zeroed phase planes ``out`` [N, words, s*s, Hq, Wq].

    One task per (image, word, row): the row's word is built channel by channel along
    contiguous pixels (vectorised), then scattered into the phase planes.
    """
    n_img, _, height, width = x.shape
    words = out.shape[1]
    for task in prange(n_img * words * height):
        n = task // (words * height)
        k = (task // height) % words
        h = task % height
        row = np.zeros(width, np.uint64)
        for b in range(min(64, chans - 64 * k)):
            c = 64 * k + b
            src = x[n, c, h]
            a, z, shift = alpha[c], beta[c], np.uint64(b)
            for j in range(width):
                row[j] |= np.uint64(src[j] * a + z >= 0) << shift
        for phase in range(stride):
            dst, j0, count = _phase_row(out, n, k, h + pad, pad, stride, phase, width)
            for j in range(count):
                dst[j0 + j] = row[phase + stride * j]


@njit(parallel=True, cache=True)
def affine_kernel(acc: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                  residual: np.ndarray | None, out: np.ndarray) -> None:
    """``out[n, c] = acc[n, c] * scale[c] + shift[c] (+ residual[n, c])``, int32 -> float in
    one NCHW pass (``out`` may be a channel slice of a larger buffer). Numba compiles the
    ``residual=None`` call without the residual branch."""
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


@njit(parallel=True, cache=True)
def affine_pack_kernel(acc: np.ndarray, scale: np.ndarray, shift: np.ndarray,
                       residual: np.ndarray | None, out: np.ndarray, pad: int, stride: int,
                       planes: np.ndarray) -> None:
    """:func:`affine_kernel`, and the signs of what it writes packed into zeroed ``planes``
    [N, words, s*s, Hq, Wq] for the next binary conv (its layout ``pad``, ``stride``), so
    the next layer reads no floats. The sign is taken of the stored value, as torch does."""
    n_img, chans, height, width = acc.shape
    words = planes.shape[1]
    for task in prange(n_img * words * height):
        n = task // (words * height)
        k = (task // height) % words
        h = task % height
        row = np.zeros(width, np.uint64)
        for b in range(min(64, chans - 64 * k)):
            c = 64 * k + b
            src, dst, bit = acc[n, c, h], out[n, c, h], np.uint64(b)
            if residual is None:
                for w in range(width):
                    dst[w] = src[w] * scale[c] + shift[c]
                    row[w] |= np.uint64(dst[w] >= 0) << bit
            else:
                res = residual[n, c, h]
                for w in range(width):
                    dst[w] = src[w] * scale[c] + shift[c] + res[w]
                    row[w] |= np.uint64(dst[w] >= 0) << bit
        for phase in range(stride):
            dst_row, j0, count = _phase_row(planes, n, k, h + pad, pad, stride, phase, width)
            for j in range(count):
                dst_row[j0 + j] = row[phase + stride * j]


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
