"""An 8x8 block transpose in vector registers, for kernels that turn channels-last rows
into NCHW planes.

LLVM does not find a transpose in a scalar copy loop: the stem's ReLU + max-pool copied its
[W, C] tile into NCHW one element at a time (gathers at a stride of C); with these blocks
the pass took 0.72-0.77x the time on the ImageNet stem (0.76x in the AVX2 build, both
with its buffers no longer zeroed). Eight row loads, three stages of shuffles (the
classic unpack / shuffle / 128-bit-lane exchange network) and eight row stores do the same
for 64 elements, on AVX2 and AVX-512 alike (LLVM picks the instructions).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["BLOCK", "transpose_block"]

BLOCK = 8
# (lanes 0-7 from the first vector, 8-15 from the second) for each stage of the network
_UNPACK = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15])
_PAIRS = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
_HALVES = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])


def _stage(builder: ir.IRBuilder, vectors: list[ir.Value], masks: tuple[list[int], ...],
           partner: int) -> list[ir.Value]:
    """One stage: vector ``i`` meets ``i + partner`` (``i`` in each block of 2 * partner),
    giving two results (the two masks) in the places of the two inputs."""
    out = list(vectors)
    mask_type = ir.VectorType(ir.IntType(32), BLOCK)
    for first in range(0, BLOCK, 2 * partner):
        for i in range(first, first + partner):
            a, b = vectors[i], vectors[i + partner]
            out[i], out[i + partner] = (builder.shuffle_vector(a, b, ir.Constant(mask_type, m))
                                        for m in masks)
    return out


@intrinsic
def transpose_block(typingctx, src, src_at, src_row, dst, dst_at, dst_row):
    """``dst[dst_at + c * dst_row + r] = src[src_at + r * src_row + c]`` for ``r, c < 8``:
    8 rows of 8 contiguous elements of ``src`` become 8 rows of ``dst`` (flat float32 or
    float64 arrays of one dtype; offsets and row lengths in elements, in bounds)."""
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)
            and src.dtype == dst.dtype and src.dtype in (types.float32, types.float64)):
        return None
    signature = types.void(src, src_at, src_row, dst, dst_at, dst_row)

    def codegen(context, builder, sig, args):
        element = context.get_data_type(sig.args[0].dtype)
        vector = ir.VectorType(element, BLOCK).as_pointer()
        align = sig.args[0].dtype.bitwidth // 8

        def rows(array: int, at: int, row: int) -> list[ir.Value]:
            data = context.make_array(sig.args[array])(context, builder, args[array]).data
            start, step = (context.cast(builder, args[i], sig.args[i], types.intp)
                           for i in (at, row))
            return [builder.bitcast(builder.gep(data, [builder.add(
                start, builder.mul(step, ir.Constant(step.type, r)))]), vector)
                for r in range(BLOCK)]

        loaded = [builder.load(p, align=align) for p in rows(0, 1, 2)]
        # lane c of row r ends up as lane r of column c: pairs of rows interleaved, then
        # quads of rows (columns c and c + 4 in one vector), then the 128-bit halves
        v = _stage(builder, loaded, _UNPACK, 1)  # lo(r0, r1), hi(r0, r1), lo(r2, r3), ...
        v = _stage(builder, [v[i] for i in (0, 2, 1, 3, 4, 6, 5, 7)], _PAIRS, 1)
        columns = _stage(builder, v, _HALVES, 4)  # columns 0-3 and 4-7 of rows 0-7
        for value, p in zip(columns, rows(3, 4, 5), strict=True):
            builder.store(value, p, align=align)
        return context.get_dummy_value()

    return signature, codegen
