"""The convolution's inner step, written as LLVM IR: 8 output pixels x 4 output channels.

Why IR and not a Numba loop for LLVM to vectorise: a vectorised loop keeps every weight
word broadcast in a vector register, and 4 channels x 9 taps = 36 of them do not fit in
AVX-512's 32 registers, so LLVM spilled them to the stack and reloaded them (and, for the
many-word layers, re-broadcast and spilled them again before every short pass). Here the
weights are loaded inside the step, which LLVM turns into embedded-broadcast operands
(``vpxorq (mem){1to8}``) with no spills. Measured on the Bi-Real ResNet-18 layers (Zen 4,
one thread, convolution alone): 512ch 7x7 from 59% to 73% of the popcount ceiling,
256 -> 512 stride 2 from 54% to 70%, 256ch 14x14 from 72% to 78%.

How the words are counted depends on the popcount variant (:func:`.popcount.emit_channel_counts`):
``vpopcntq`` on 8-word vectors with AVX-512; with AVX2, a carry-save tree and nibble
lookup on 4-word registers for three channels and scalar ``popcntq`` for the fourth, the
weights then read as 4 copies each (:data:`WEIGHT_LANES`); on CPUs without AVX2 each pixel's
words are counted with scalar ``popcntq`` and only the small epilogue uses vectors.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .popcount import emit_channel_counts, weight_lanes

__all__ = ["LANES", "quad_step"]

LANES = 8  # output pixels per step (one 512-bit vector of words)
CHANNELS = 4  # output channels per step: each loaded input vector meets 4 weights
# Square kernels up to this side get the rowwise tap path (see quad_step); a second path of
# a 7x7 step compiled 1.3-1.5 s more (AVX2), for binary convs that are rare that large.
ROWWISE_MAX_SIDE = 3

WEIGHT_LANES = weight_lanes()  # copies of each weight word the step reads
_I64 = ir.IntType(64)


@intrinsic
def quad_step(typingctx, x, x_at, offsets, w, w_at, w_row, src, src_at, src_row, dst, dst_at,
              dst_row):
    """For pixels ``q < 8`` and channels ``j < 4`` (no bounds checks):

    ``dst[dst_at + j * dst_row + q] = src[src_at + j * src_row + q]
    - 2 * sum_t popcount(x[x_at + offsets[t] + q] ^ w[w_at + j * w_row + t])``

    x, w: 1-D uint64 arrays; src, dst: 1-D int32 arrays (may be the same); offsets: a
    tuple of tap offsets.

    A square kernel's taps (up to :data:`ROWWISE_MAX_SIDE` a side) whose offsets run in rows
    of consecutive words (stride 1: a ``k x k`` tuple, checked at run time) are read from
    ``k`` row starts plus constant displacements; other offsets (strided convs' phase
    planes) from one start per tap. Why: ``k * k`` start registers, with the scalar
    ``popcnt`` slots' registers, did not fit in x86's 16 general registers, and the AVX2 step
    reloaded them from the stack (126 stack loads in its 870-instruction loop on a 3x3
    conv). The two code paths ran the AVX2 build of the Bi-Real 3x3 stride-1 convs
    0.83-0.85x the time and the AVX-512 build 0.93-0.97x (conv alone, paired rounds, Zen 4),
    for 0.1-0.5 s more compile time of a 3x3 step.
    """
    words = types.Array(types.uint64, 1, "C")
    counts = types.Array(types.int32, 1, "C")
    if not (x == words and w == words and src == counts and dst == counts
            and isinstance(offsets, types.UniTuple)
            and all(isinstance(v, types.Integer)
                    for v in (x_at, w_at, w_row, src_at, src_row, dst_at, dst_row))):
        return None
    signature = types.void(x, x_at, offsets, w, w_at, w_row, src, src_at, src_row, dst, dst_at,
                           dst_row)

    def codegen(context, builder, sig, args):
        def data(i):
            return context.make_array(sig.args[i])(context, builder, args[i]).data

        def index(i):
            return context.cast(builder, args[i], sig.args[i], types.intp)

        def at(base, row, j, t=0):  # base + j * row + t (LLVM folds the zeros)
            return builder.add(builder.add(base, builder.mul(row, ir.Constant(_I64, j))),
                               ir.Constant(_I64, t))

        def vector_at(data_ptr, i, vector):  # pointer to the vector starting at element i
            return builder.bitcast(builder.gep(data_ptr, [i]), vector.as_pointer())

        x_data, w_data, src_data, dst_data = data(0), data(3), data(6), data(9)
        offs = [context.cast(builder, builder.extract_value(args[2], t), offsets.dtype,
                             types.intp) for t in range(offsets.count)]

        def emit(x_taps: list[ir.Value]) -> None:
            """The step, tap t's words read from ``x_taps[t] + q``."""
            def x_at(t, q):  # tap t's input word for pixel q
                return builder.gep(x_data, [builder.add(x_taps[t], ir.Constant(_I64, q))])

            def w_at(j, t):  # channel j's weight word for tap t (WEIGHT_LANES copies)
                return builder.gep(w_data, [builder.mul(at(index(4), index(5), j, t),
                                                        ir.Constant(_I64, WEIGHT_LANES))])

            sums = emit_channel_counts(builder, x_at, w_at, CHANNELS, offsets.count, LANES)
            counts_vector = ir.VectorType(ir.IntType(32), LANES)
            one = ir.Constant(counts_vector, [1] * LANES)
            for j, total in enumerate(sums):
                old = builder.load(vector_at(src_data, at(index(7), index(8), j),
                                             counts_vector), align=4)
                new = builder.sub(old, builder.shl(builder.trunc(total, counts_vector), one))
                builder.store(new, vector_at(dst_data, at(index(10), index(11), j),
                                             counts_vector), align=4)

        generic = [builder.add(index(1), o) for o in offs]
        side = math.isqrt(offsets.count)
        if side * side != offsets.count or not 2 <= side <= ROWWISE_MAX_SIDE:
            emit(generic)
            return context.get_dummy_value()
        # rowwise: offsets[t] == offsets[side * r] + c for t = side * r + c (stride 1)
        rows = [offs[side * r] for r in range(side)]
        rowwise = ir.Constant(ir.IntType(1), 1)
        for t, offset in enumerate(offs):
            expected = builder.add(rows[t // side], ir.Constant(_I64, t % side))
            rowwise = builder.and_(rowwise, builder.icmp_signed("==", offset, expected))
        with builder.if_else(rowwise) as (then, otherwise):
            with then:
                starts = [builder.add(index(1), row) for row in rows]
                emit([builder.add(starts[t // side], ir.Constant(_I64, t % side))
                      for t in range(offsets.count)])
            with otherwise:
                emit(generic)
        return context.get_dummy_value()

    return signature, codegen
