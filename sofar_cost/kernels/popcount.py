"""64-bit popcount for Numba kernels, the CPU-dependent variant choice and a ceiling benchmark.

``np.bitwise_count`` is not available in nopython mode, so :func:`popcount` is an
intrinsic. Its code depends on the CPU Numba compiles for:

* ``avx512-vpopcntdq``: ``llvm.ctpop`` on 8-word vectors (the convolution step,
  :mod:`.quad_step`) or on single words for LLVM to vectorise, giving ``vpopcntq`` on
  512-bit registers (8 words per instruction).
* ``scalar-popcnt`` (x86 without VPOPCNTDQ): single words only, with the ``popcnt``
  instruction as inline assembly. LLVM cannot vectorise through inline assembly, which is
  what we want there: its AVX2 ``vpshufb`` popcount emulation measured ~20% slower than
  scalar ``popcnt``.
* ``generic``: other architectures get plain ``llvm.ctpop``.

The decision reads the same CPU features Numba keys its on-disk cache with, so cached
kernels never mix variants.
"""

from __future__ import annotations

import platform
import time

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "VARIANT",
    "cpu_features",
    "emit_popcount",
    "kernel_variant",
    "measure_popcount_ceiling",
    "popcount",
]


def cpu_features() -> set[str]:
    """CPU features Numba targets (``NUMBA_CPU_FEATURES`` overrides the host's)."""
    flat = config.CPU_FEATURES
    if flat is None:
        flat = llvm.get_host_cpu_features().flatten()
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


def kernel_variant() -> str:
    """Name of the popcount code path the kernels are compiled with on this CPU."""
    if "avx512vpopcntdq" in cpu_features():
        return "avx512-vpopcntdq"
    if platform.machine().lower() in ("x86_64", "amd64") and "popcnt" in cpu_features():
        return "scalar-popcnt"
    return "generic"


VARIANT = kernel_variant()  # fixed at import, like the CPU features Numba compiles for
if VARIANT == "scalar-popcnt":
    llvm.initialize_native_asmparser()  # needed to assemble the inline ``popcntq``


def emit_popcount(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """IR for the set-bit count of an ``i64`` or of each lane of an ``i64`` vector, in this
    CPU's variant (inline ``popcntq`` only for scalars: vectors are for vector popcount)."""
    fnty = ir.FunctionType(value.type, [value.type])
    if isinstance(value.type, ir.VectorType):
        name = f"llvm.ctpop.v{value.type.count}i64"
    elif VARIANT == "scalar-popcnt":
        return builder.asm(fnty, "popcntq $1, $0", "=r,r", [value], side_effect=False)
    else:
        name = "llvm.ctpop.i64"
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [value])


@intrinsic
def popcount(typingctx, x):
    """Number of set bits of a ``uint64``, as ``int64`` (see module docstring)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return emit_popcount(builder, args[0])

    return types.int64(types.uint64), codegen


@njit(cache=True, fastmath=True)
def _xor_popcount_sum(a: np.ndarray, b: np.ndarray, repeat: int) -> int:
    """``repeat`` passes of XOR + popcount + add of each word of ``a`` against 4 words.

    The 4 register-resident words mirror the convolution, where each loaded weight word
    meets several activation words; with one load per XOR the loop measures the
    arithmetic (XOR, popcount, add) rather than load bandwidth.
    """
    total = 0
    m0, m1, m2, m3 = b[0], b[1], b[2], b[3]
    for _ in range(repeat):
        s = 0
        for i in range(a.shape[0]):
            w = a[i]
            s += popcount(w ^ m0) + popcount(w ^ m1) + popcount(w ^ m2) + popcount(w ^ m3)
        total += s
        a[0] += np.uint64(1)  # keep passes from being folded together
    return total


def measure_popcount_ceiling(seconds: float = 0.5, words: int = 1024) -> float:
    """Binary MACs/s of one thread doing XOR + popcount + add on L1-resident words.

    The practical ceiling of a popcount convolution on this CPU (each 64-bit word is 64
    binary multiply-accumulates). Call it with one Numba thread; it runs serially anyway.
    """
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=words, dtype=np.uint64)
    b = rng.integers(0, 2**63, size=4, dtype=np.uint64)
    _xor_popcount_sum(a, b, 1)  # compile / load from cache
    repeat = 16
    while True:
        t0 = time.perf_counter()
        _xor_popcount_sum(a, b, repeat)
        dt = time.perf_counter() - t0
        if dt > seconds / 16 or repeat > 2**30:
            break
        repeat *= 2
    best = dt
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        _xor_popcount_sum(a, b, repeat)
        best = min(best, time.perf_counter() - t0)
    return 4 * 64.0 * words * repeat / best
