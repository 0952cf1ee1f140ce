"""Popcount for Numba kernels: the CPU-dependent variants, the choice among them and their
ceiling benchmark.

``np.bitwise_count`` is not available in nopython mode, so counting is emitted as LLVM IR
(:func:`emit_popcount` for single values, :func:`emit_lane_counts` for the convolution's
sums over taps). The variants, fastest first (:data:`VARIANTS`):

* ``avx512-vpopcntdq``: ``llvm.ctpop`` on 8-word vectors, i.e. ``vpopcntq`` on 512-bit
  registers (8 words per instruction).
* ``avx2-carry-save``: for AVX2 CPUs without vector popcount. Counting is lane-wise over the
  output-pixel vectors the convolution already uses (lane q = pixel q), in three stages:
  a carry-save adder tree (Harley-Seal) folds the taps' XOR words into bit planes of weight
  1, 2, 4, ... (a full adder is 5 bitwise ops on 3 vectors and leaves 2, so 9 taps become 4
  planes, of weights 1, 2, 2 and 4: no half adders, which leave as many planes as they take);
  each plane is counted per byte by nibble lookup (``vpshufb``) in a table already
  multiplied by the plane's weight, all planes adding into one byte accumulator; one
  ``vpsadbw`` per 4 lanes finally sums the bytes of each 64-bit lane. That is about 62
  vector ops per 9 taps x 4 lanes, 1.7 per word against 3 scalar ones (XOR, ``popcnt``,
  add). Why not one lookup per word: LLVM's own ``ctpop`` on AVX2 does that (shift, 2
  masks, 2 ``vpshufb``, ``vpsadbw`` and add per vector) and measured ~20% slower than scalar
  ``popcnt``; the tree cuts the lookups per 9 taps from 9
  to 4, and ``vpsadbw`` runs once per 9 taps. One channel of the step's four is counted
  with scalar ``popcnt`` meanwhile, on the integer ALUs (see :func:`emit_channel_counts`).
  Muła, Kurz and Lemire (2018) measured AVX2 Harley-Seal at about twice scalar ``popcnt`` on
  Intel, where ``popcnt`` issues once per cycle; Zen 3/4 issue it 4 times per cycle, which
  leaves the vector path about 1.3-1.6x (ceilings, Zen 4) there.
* ``scalar-popcnt`` (x86 without AVX2): single words with the ``popcnt`` instruction as
  inline assembly, so that LLVM does not replace it by its slower vector emulation.
* ``generic``: plain ``llvm.ctpop`` on vectors, as LLVM lowers it (other architectures,
  and x86 CPUs without ``popcnt``).

The kernels use the first variant the CPU Numba compiles for can run (:func:`kernel_variant`;
:func:`popcount_ceilings` measures them all). It depends only on the CPU features Numba keys
its on-disk cache with, so cached kernels never mix variants; to build another variant on
the same machine, compile for another CPU (``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``, own
``NUMBA_CACHE_DIR``), as ``sofar-cost bench --kernel`` does.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable, Iterable

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import config, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "VARIANT",
    "VARIANTS",
    "ceiling_work",
    "cpu_features",
    "emit_lane_counts",
    "emit_popcount",
    "kernel_variant",
    "measure_popcount_ceiling",
    "popcount_ceilings",
    "runnable_variants",
    "weight_lanes",
]

VARIANTS = ("avx512-vpopcntdq", "avx2-carry-save", "scalar-popcnt", "generic")
_NEEDS = {  # CPU features each variant's code needs
    "avx512-vpopcntdq": {"avx512f", "avx512vpopcntdq"},
    "avx2-carry-save": {"avx2", "popcnt"},
    "scalar-popcnt": {"popcnt"},
    "generic": set(),
}
_I64 = ir.IntType(64)
_BYTES = ir.VectorType(ir.IntType(8), 32)  # one AVX2 register
_HALF = ir.VectorType(_I64, 4)  # the same, as 64-bit lanes
# (channel, 4-lane half) slots of the ``avx2-carry-save`` step counted with scalar popcnt:
# 2 of 8 (one channel) measured 1.04-1.23x the scalar ceiling on 56x56x64 (Zen 4, 4 runs),
# 0 (all vector) 1.00-1.10x, 3 only 1.01-1.02x; 1 was within the noise of 2.
SCALAR_SLOTS = 2
_MAX_TAPS = 31  # per byte accumulator: 31 words x 8 bits = 248 < 256


def cpu_features() -> set[str]:
    """CPU features Numba targets (``NUMBA_CPU_FEATURES`` overrides the host's)."""
    flat = config.CPU_FEATURES
    if flat is None:
        flat = llvm.get_host_cpu_features().flatten()
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


def runnable_variants(features: set[str] | None = None) -> list[str]:
    """The variants whose code the target CPU (or one with ``features``) can run, fastest
    first: the x86 ones on x86 (``scalar-popcnt`` needs only ``popcnt``), else ``generic``."""
    features = cpu_features() if features is None else features
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ["generic"]
    return [v for v in VARIANTS if v != "generic" and _NEEDS[v] <= features] or ["generic"]


def kernel_variant() -> str:
    """Name of the popcount code path the kernels are compiled with on this CPU."""
    return runnable_variants()[0]


VARIANT = kernel_variant()  # fixed at import, like the CPU features Numba compiles for


def weight_lanes(variant: str = VARIANT) -> int:
    """Copies of each weight word the convolution step reads, consecutive in memory: AVX2
    has no broadcast memory operands, and LLVM kept the 36 broadcast weights of a step in
    spilled registers; with 4 copies each is a plain 256-bit memory operand."""
    return 4 if variant == "avx2-carry-save" else 1


if "scalar-popcnt" in runnable_variants():
    llvm.initialize_native_asmparser()  # needed to assemble the inline ``popcntq``


def emit_popcount(builder: ir.IRBuilder, value: ir.Value, variant: str = VARIANT) -> ir.Value:
    """IR for the set-bit count of an ``i64`` or of each lane of an ``i64`` vector (inline
    ``popcntq`` for scalars of the variants that have it; vectors get ``llvm.ctpop``)."""
    fnty = ir.FunctionType(value.type, [value.type])
    if isinstance(value.type, ir.VectorType):
        name = f"llvm.ctpop.v{value.type.count}i64"
    elif variant in ("scalar-popcnt", "avx2-carry-save"):
        return builder.asm(fnty, "popcntq $1, $0", "=r,r", [value], side_effect=False)
    else:
        name = "llvm.ctpop.i64"
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), [value])


def emit_lane_counts(builder: ir.IRBuilder, words: Iterable[ir.Value],
                     variant: str = VARIANT) -> ir.Value:
    """IR for ``sum(popcount(w) for w in words)``, lane-wise if ``words`` are ``i64``
    vectors (the result has their type; ``avx2-carry-save`` takes ``<4 x i64>`` vectors).
    ``words`` may be a generator: each word's IR is then emitted just before its count."""
    if variant == "avx2-carry-save":
        words = list(words)
        if isinstance(words[0].type, ir.VectorType):
            return _carry_save_counts(builder, words)
    total = None
    for word in words:
        count = emit_popcount(builder, word, variant)
        total = count if total is None else builder.add(total, count)
    return total


def emit_channel_counts(builder: ir.IRBuilder, x_at: Callable[[int, int], ir.Value],
                        w_at: Callable[[int, int], ir.Value], channels: int, taps: int,
                        lanes: int, variant: str = VARIANT) -> list[ir.Value]:
    """IR for the convolution step's counts: per channel j < ``channels``, the
    ``<lanes x i64>`` vector of ``sum_t popcount(x[t] + q ^ w[j, t])`` over taps t, lane q.
    ``x_at(t, q)`` points to tap t's input word for lane q (consecutive in q);
    ``w_at(j, t)`` to :func:`weight_lanes` copies of the weight word of channel j, tap t.

    ``avx512-vpopcntdq`` and ``generic`` load each tap's ``lanes`` words as one vector and
    keep it for all channels. ``scalar-popcnt`` counts word by word and gathers the sums into
    vectors. ``avx2-carry-save`` counts on AVX2 registers (4 lanes each) except the last
    :data:`SCALAR_SLOTS` (channel, half) slots, which it counts word by word with scalar
    ``popcnt`` between the vector trees: the integer ALUs count in parallel with the vector
    units. All its input words are reloaded from L1 for every channel by volatile loads, so
    that LLVM cannot merge the reloads: kept for all channels, 9 taps x 2 registers did not
    fit in AVX2's 16, and the spill stores and reloads halved the speed (AVX-512 has 32
    registers and keeps them); plain loads for the scalar words let LLVM merge them with
    the vector loads, and the kernel ran at 0.75x the scalar ceiling instead of 1.2x.
    """
    if variant == "scalar-popcnt":
        ws = [[builder.load(w_at(j, t)) for t in range(taps)] for j in range(channels)]
        pixels = [[builder.load(x_at(t, q)) for t in range(taps)] for q in range(lanes)]
        return [_gather(builder, [emit_lane_counts(builder, [builder.xor(x, w) for x, w in
                                                             zip(xs, w_taps, strict=True)],
                                                   variant) for xs in pixels])
                for w_taps in ws]
    if variant == "avx2-carry-save":
        def load(ptr: ir.Value, typ: ir.Type = _HALF) -> ir.Value:
            return _volatile(builder.load(builder.bitcast(ptr, typ.as_pointer()), align=8))

        def scalar_count(j: int, q: int) -> ir.Value:
            return emit_lane_counts(builder, [builder.xor(load(x_at(t, q), _I64), builder.load(
                w_at(j, t))) for t in range(taps)], variant)

        # (channel, 4-lane half) slots: the last SCALAR_SLOTS on scalar popcnt, their
        # words counted between the vector trees of the others
        slots = [(j, h) for j in range(channels) for h in range(0, lanes, 4)]
        vector_slots, scalar_slots = slots[:-SCALAR_SLOTS], slots[-SCALAR_SLOTS:]
        pending = [(j, h + i) for j, h in scalar_slots for i in range(4)]
        parts: dict[tuple[int, int], ir.Value] = {}
        counts: dict[tuple[int, int], ir.Value] = {}
        for n, (j, h) in enumerate(vector_slots):
            parts[j, h] = _carry_save_counts(builder, [builder.xor(
                load(x_at(t, h)), load(w_at(j, t))) for t in range(taps)])
            while len(counts) < len(pending) * (n + 1) // len(vector_slots):
                j_q = pending[len(counts)]
                counts[j_q] = scalar_count(*j_q)
        for j, h in scalar_slots:
            parts[j, h] = _gather(builder, [counts[j, h + i] for i in range(4)])
        return [_concat(builder, [parts[j, h] for h in range(0, lanes, 4)])
                for j in range(channels)]
    vector = ir.VectorType(_I64, lanes)
    ws = [[builder.load(w_at(j, t)) for t in range(taps)] for j in range(channels)]
    xs = [builder.load(builder.bitcast(x_at(t, 0), vector.as_pointer()), align=8)
          for t in range(taps)]
    splats = [[splat(builder, w, lanes) for w in w_taps] for w_taps in ws]
    # xor, count, add tap by tap (a generator): all xors first measured ~3% slower (Zen 4)
    return [emit_lane_counts(builder, (builder.xor(x, w) for x, w in
                                       zip(xs, w_taps, strict=True)), variant)
            for w_taps in splats]


def _gather(builder: ir.IRBuilder, values: list[ir.Value]) -> ir.Value:
    """The scalars ``values`` as the lanes of one vector."""
    vector = ir.Constant(ir.VectorType(values[0].type, len(values)), None)
    for q, value in enumerate(values):
        vector = builder.insert_element(vector, value, ir.Constant(_I64, q))
    return vector


class _VolatileLoad(ir.LoadInstr):
    """``load volatile``: llvmlite has no flag for it."""

    def descr(self, buf: list[str]) -> None:
        text: list[str] = []
        super().descr(text)
        buf.append(text[0].replace("load ", "load volatile ", 1))


def _volatile(load: ir.LoadInstr) -> ir.LoadInstr:
    load.__class__ = _VolatileLoad
    return load


def splat(builder: ir.IRBuilder, value: ir.Value, lanes: int) -> ir.Value:
    """``<lanes x type>`` vector with ``value`` in every lane (a vector ``value``: repeated)."""
    if isinstance(value.type, ir.VectorType):
        n = value.type.count
        return builder.shuffle_vector(value, value, ir.Constant(
            ir.VectorType(ir.IntType(32), lanes), [i % n for i in range(lanes)]))
    vector = ir.VectorType(value.type, lanes)
    first = builder.insert_element(ir.Constant(vector, None), value, ir.Constant(_I64, 0))
    return builder.shuffle_vector(first, ir.Constant(vector, None),
                                  ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))


def _x86(builder: ir.IRBuilder, name: str, result: ir.Type, *args: ir.Value) -> ir.Value:
    fnty = ir.FunctionType(result, [a.type for a in args])
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), list(args))


def _carry_save_counts(builder: ir.IRBuilder, words: list[ir.Value]) -> ir.Value:
    """The ``avx2-carry-save`` count (module docstring) of ``<4 x i64>`` words, one AVX2
    register each: a tree per 31 words (the byte counts' limit)."""
    total = None
    for i in range(0, len(words), _MAX_TAPS):
        count = _tree_count(builder, words[i:i + _MAX_TAPS])
        total = count if total is None else builder.add(total, count)
    return total


def _concat(builder: ir.IRBuilder, parts: list[ir.Value]) -> ir.Value:
    """One vector of the lanes of ``parts`` (equal-length vectors), in order."""
    while len(parts) > 1:
        n = parts[0].type.count
        pick = ir.Constant(ir.VectorType(ir.IntType(32), 2 * n), list(range(2 * n)))
        parts = [builder.shuffle_vector(a, b, pick)
                 for a, b in zip(parts[::2], parts[1::2], strict=True)]
    return parts[0]


def _tree_count(builder: ir.IRBuilder, words: list[ir.Value]) -> ir.Value:
    """Per-lane popcount sum of at most 31 ``<4 x i64>`` words, as ``<4 x i64>``.

    A full adder (5 ops) turns 3 planes into 2 and so saves one lookup (7 ops); a half adder
    (2 ops) saves none, so planes a weight is left with (at most 2) are looked up as they
    are. Without half adders the ceiling loop ran 0.975-0.987x the time (medians of paired
    rounds, two runs, Zen 4 compiled for AVX2)."""
    queues: dict[int, list[ir.Value]] = {1: list(words)}
    planes: list[tuple[int, ir.Value]] = []  # (weight, plane) to count by lookup
    weight = 1
    while weight in queues:  # full adders while a weight has 3 planes: each saves a lookup
        queue = queues.pop(weight)
        while len(queue) >= 3:
            a, b, c = queue.pop(0), queue.pop(0), queue.pop(0)
            ab = builder.xor(a, b)
            queue.append(builder.xor(ab, c))
            queues.setdefault(2 * weight, []).append(
                builder.or_(builder.and_(a, b), builder.and_(ab, c)))
        planes += [(weight, plane) for plane in queue]
        weight *= 2
    low_nibbles = ir.Constant(_BYTES, [15] * 32)
    counts = None
    for weight, plane in planes:
        table = ir.Constant(_BYTES, [weight * bin(i).count("1") for i in range(16)] * 2)
        data = builder.bitcast(plane, _BYTES)
        shifted = builder.lshr(builder.bitcast(plane, ir.VectorType(ir.IntType(16), 16)),
                               ir.Constant(ir.VectorType(ir.IntType(16), 16), [4] * 16))
        for nibbles in (data, builder.bitcast(shifted, _BYTES)):
            looked_up = _x86(builder, "llvm.x86.avx2.pshuf.b", _BYTES, table,
                             builder.and_(nibbles, low_nibbles))
            counts = looked_up if counts is None else builder.add(counts, looked_up)
    return _x86(builder, "llvm.x86.avx2.psad.bw", ir.VectorType(_I64, 4), counts,
                ir.Constant(_BYTES, None))


BLOCK_TAPS = 9  # words per lane in one ceiling block, as in a 3x3 convolution step
BLOCK_LANES = 8
BLOCK_CHANNELS = 4  # register-resident words each loaded word meets, as in the step


@intrinsic
def _xor_count_block(typingctx, a, at, m, variant):
    """``sum over j < 4, t < 9, lanes q < 8 of popcount(a[at + 8 t + q] ^ m[j])`` counted
    as ``variant`` does it in the convolution step (vectors of 8 lanes, or one word at a
    time for the scalar variants)."""
    if not isinstance(variant, types.StringLiteral):
        return None
    name = variant.literal_value
    signature = types.int64(a, at, m, variant)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        mdata = context.make_array(sig.args[2])(context, builder, args[2]).data
        start = context.cast(builder, args[1], sig.args[1], types.intp)
        vector = ir.VectorType(_I64, BLOCK_LANES)
        copies = weight_lanes(name)
        counts = emit_channel_counts(
            builder,
            lambda t, q: builder.gep(data, [builder.add(start, ir.Constant(
                _I64, BLOCK_LANES * t + q))]),
            lambda j, t: builder.gep(mdata, [ir.Constant(_I64, j * copies)]),
            BLOCK_CHANNELS, BLOCK_TAPS, BLOCK_LANES, name)
        fnty = ir.FunctionType(_I64, [vector])
        reduce = cgutils.get_or_insert_function(builder.module, fnty,
                                                f"llvm.vector.reduce.add.v{BLOCK_LANES}i64")
        total = counts[0]
        for c in counts[1:]:
            total = builder.add(total, c)
        return builder.call(reduce, [total])

    return signature, codegen


@functools.cache
def _xor_popcount_sum(variant: str) -> Callable[[np.ndarray, np.ndarray, int], int]:
    """``repeat`` passes of :func:`_xor_count_block` over ``a`` (a multiple of 72 words) as a
    Numba function per variant. The variant is a constant of that function, not an argument:
    a string argument made literal (``numba.literally``) is re-typed on every call (~30 ms).
    Not cached on disk (a closure): it compiles in well under a second."""
    block = BLOCK_TAPS * BLOCK_LANES

    @njit
    def xor_popcount_sum(a: np.ndarray, m: np.ndarray, repeat: int) -> int:
        total = 0
        for _ in range(repeat):
            for i in range(0, a.shape[0], block):
                total += _xor_count_block(a, i, m, variant)
            a[0] += np.uint64(1)  # keep passes from being folded together
        return total

    return xor_popcount_sum


def _ceiling_loop(variant: str, words: int) -> tuple[Callable[[int], int], float]:
    """``(passes, macs_per_pass)``: ``passes(repeat)`` runs the ceiling loop over ``words``
    L1-resident words ``repeat`` times (compiled on the first call)."""
    if variant not in runnable_variants():
        raise ValueError(f"popcount variant {variant!r} cannot run on this CPU "
                         f"(runnable: {', '.join(runnable_variants())})")
    block = BLOCK_TAPS * BLOCK_LANES
    words = max(block, words // block * block)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2**63, size=words, dtype=np.uint64)
    m = np.repeat(rng.integers(0, 2**63, size=BLOCK_CHANNELS, dtype=np.uint64),
                  weight_lanes(variant))
    xor_popcount_sum = _xor_popcount_sum(variant)
    return (lambda repeat: xor_popcount_sum(a, m, repeat)), BLOCK_CHANNELS * 64.0 * words


def ceiling_work(macs: float, variant: str = VARIANT, words: int = 1152
                 ) -> tuple[Callable[[], int], float]:
    """``(run, done)``: ``run()`` does the ceiling loop of :func:`measure_popcount_ceiling`
    (XOR + popcount + add on L1-resident words, counted as ``variant`` counts in the
    convolution step) for about ``macs`` binary MACs, exactly ``done`` of them (compiled on
    the first call). A benchmark times it in the same interleaved rounds as a layer, so that
    a layer's fraction of the ceiling is paired like its other ratios."""
    passes, per_pass = _ceiling_loop(variant, words)
    repeat = max(1, round(macs / per_pass))
    return (lambda: passes(repeat)), per_pass * repeat


def measure_popcount_ceiling(seconds: float = 0.5, words: int = 1152,
                             variant: str = VARIANT) -> float:
    """Binary MACs/s of one thread doing XOR + popcount + add on L1-resident words, the
    way ``variant`` counts in the convolution step (9 words per lane, 8 lanes, each loaded
    word XORed with 4 register-resident words).

    The practical ceiling of a popcount convolution on this CPU (each 64-bit word is 64
    binary multiply-accumulates). Call it with one Numba thread; it runs serially anyway.
    """
    passes, per_pass = _ceiling_loop(variant, words)
    passes(1)  # compile
    repeat = 16
    while True:
        t0 = time.perf_counter()
        passes(repeat)
        dt = time.perf_counter() - t0
        if dt > seconds / 16 or repeat > 2**30:
            break
        repeat *= 2
    best = dt
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        passes(repeat)
        best = min(best, time.perf_counter() - t0)
    return per_pass * repeat / best


def popcount_ceilings(seconds: float = 0.3) -> dict[str, float]:
    """``{variant: G binary MACs/s}`` of :func:`measure_popcount_ceiling` for every variant
    the target CPU can run, measured one after another in this process."""
    return {v: measure_popcount_ceiling(seconds, variant=v) / 1e9 for v in runnable_variants()}
