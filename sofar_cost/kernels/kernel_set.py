"""The Numba kernels the packed layers and the engine call, parallel or serial by thread count.

A ``parallel=True`` kernel enters Numba's threading layer on every call, even when Numba runs
one thread: with the 50-odd kernel calls of one bireal18 forward, every kernel compiled
without ``parallel`` ran the whole net 0.956x the time at one thread (quartiles 0.875-1.010,
``benchmarks/ab_engine.py --cold``, 24 blocks, Zen 4). So each parallel kernel also has a
serial twin: the same Python function compiled again without ``parallel`` (``prange`` then
runs as ``range``), whose callers' twins call the twins. :func:`kernels` picks the set for
Numba's thread count at the time of the call.

A twin has its own name (``<kernel>_serial``), so its cached machine code has its own files;
like the kernels', it is recompiled when the source file of its Python function changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import FunctionType
from typing import Any

import numba
from numba import njit
from numba.np.ufunc import parallel

from . import _conv_kernel as conv
from . import fused

__all__ = ["Kernels", "kernels"]


@dataclass(frozen=True)
class Kernels:
    """One consistent set: the serial set's kernels call serial kernels only."""

    pack_kernel: Any
    pack_into: Any
    conv_kernel: Any
    pack_and_conv: Any
    affine_kernel: Any
    affine_pack_kernel: Any
    affine_maxpool_relu_kernel: Any
    avgpool2_kernel: Any
    relu_maxpool_nhwc_kernel: Any


def _serial_twin(kernel: Any, **callees: Any) -> Any:
    """``kernel``'s Python function compiled without ``parallel``, its global names
    ``callees`` bound to (serial) replacements."""
    f = kernel.py_func
    twin = FunctionType(f.__code__, {**f.__globals__, **callees}, f.__name__, f.__defaults__,
                        f.__closure__)
    twin.__qualname__ = f"{f.__qualname__}_serial"
    twin.__module__, twin.__doc__ = f.__module__, f.__doc__
    return njit(cache=True)(twin)


PARALLEL = Kernels(
    conv.pack_kernel, conv.pack_into, conv.conv_kernel, conv.pack_and_conv, fused.affine_kernel,
    fused.affine_pack_kernel, fused.affine_maxpool_relu_kernel, fused.avgpool2_kernel,
    fused.relu_maxpool_nhwc_kernel,
)


def _serial_set() -> Kernels:
    pack = _serial_twin(conv.pack_kernel)
    pack_into = _serial_twin(conv.pack_into, pack_kernel=pack,
                             pack_nhwc_kernel=_serial_twin(conv.pack_nhwc_kernel))
    conv_kernel = _serial_twin(conv.conv_kernel)
    affine = _serial_twin(fused.affine_kernel)
    return Kernels(
        pack, pack_into, conv_kernel,
        _serial_twin(conv.pack_and_conv, pack_into=pack_into, conv_kernel=conv_kernel),
        affine, _serial_twin(fused.affine_pack_kernel, affine_kernel=affine, pack_kernel=pack),
        _serial_twin(fused.affine_maxpool_relu_kernel), _serial_twin(fused.avgpool2_kernel),
        _serial_twin(fused.relu_maxpool_nhwc_kernel),
    )


SERIAL = _serial_set()


def _numba_threads() -> int:
    """``numba.get_num_threads()``, read straight from the threading layer once it runs:
    the public call takes a multiprocessing lock every time, which cost 7-30 us per call
    in a packed bireal18 forward right after a float one (68 us over its 5 calls)."""
    if getattr(parallel, "_is_initialized", False):  # private: fall back if it goes away
        return parallel._get_num_threads()
    return numba.get_num_threads()


def kernels() -> Kernels:
    """The set for Numba's current thread count (serial at one thread)."""
    return SERIAL if _numba_threads() == 1 else PARALLEL
