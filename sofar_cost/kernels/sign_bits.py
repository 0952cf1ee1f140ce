"""Vector sign-bit extraction for packing channels-last floats into 64-channel words.

Written as LLVM vector IR because Numba's loop vectoriser turns "compare, shift, or" per
element into several instructions; as a ``<64 x float>`` compare LLVM emits vector compares
into mask registers (AVX-512) or ``movmsk`` (AVX2) instead. The compare is ordered ``>=``:
``-0.0`` gives 1 and NaN gives 0, the packing's sign convention.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["sign_word"]


@intrinsic
def sign_word(typingctx, arr, start):
    """``uint64`` whose bit ``c`` is ``arr[start + c] >= 0``, for 64 contiguous values of a
    1-D float32/float64 array (no bounds check)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1
            and arr.dtype in (types.float32, types.float64)):
        return None
    if not isinstance(start, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        begin = context.cast(builder, args[1], signature.args[1], types.intp)
        elem = context.get_data_type(signature.args[0].dtype)
        vector = ir.VectorType(elem, 64)
        ptr = builder.bitcast(builder.gep(data, [begin]), vector.as_pointer())
        values = builder.load(ptr, align=elem.get_abi_size(context.target_data))
        mask = builder.fcmp_ordered(">=", values, ir.Constant(vector, None))
        return builder.bitcast(mask, ir.IntType(64))

    return types.uint64(arr, start), codegen
