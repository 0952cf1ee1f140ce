"""Run a benchmark with a chosen kernel variant: ``--kernel auto|avx512|avx2|scalar``.

The popcount variant is fixed by the CPU features Numba compiles for (see :mod:`.popcount`),
so another variant needs another compile target: a subprocess with ``NUMBA_CPU_FEATURES``
set to this CPU's features with AVX-512 (for ``avx2``) or AVX2 and AVX-512 (for ``scalar``)
switched off, and its own ``NUMBA_CACHE_DIR`` so that the cached kernels never mix. That
lets one AVX-512 machine measure all three x86 paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib import import_module
from pathlib import Path
from typing import Any

import llvmlite.binding as llvm
from numba import config

from sofar_cost.errors import SofarError

from .popcount import VARIANT, runnable_variants

__all__ = ["KERNELS", "call_with_kernel", "kernel_env"]

KERNELS = {"avx512": "avx512-vpopcntdq", "avx2": "avx2-carry-save", "scalar": "scalar-popcnt"}
_SWITCHED_OFF = {  # feature-name prefixes turned off to build each kernel on a bigger CPU
    "avx512": (),
    "avx2": ("avx512", "amx", "avx10"),
    "scalar": ("avx512", "amx", "avx10", "avx2", "avxvnni", "avxifma", "avxneconvert"),
}


def _host_features() -> list[str]:
    flat = config.CPU_FEATURES or llvm.get_host_cpu_features().flatten()
    return [f for f in flat.split(",") if f]


def kernel_env(kernel: str) -> dict[str, str] | None:
    """Environment overrides that make Numba compile ``kernel``; None when this process
    already does (``auto`` always). Raises ``SofarError`` for a kernel this CPU cannot run."""
    if kernel == "auto" or KERNELS.get(kernel) == VARIANT:
        return None
    if kernel not in KERNELS:
        raise SofarError(f"unknown kernel {kernel!r} (valid: auto, {', '.join(KERNELS)})")
    features = [("-" + f[1:]) if f.startswith("+") and f[1:].startswith(_SWITCHED_OFF[kernel])
                else f for f in _host_features()]
    enabled = {f[1:] for f in features if f.startswith("+")}
    if KERNELS[kernel] not in runnable_variants(enabled):
        raise SofarError(f"kernel {kernel!r} cannot run on this CPU (it can run: "
                         f"{', '.join(k for k, v in KERNELS.items() if v in runnable_variants())})")
    cpu = config.CPU_NAME or llvm.get_host_cpu_name()
    cache = Path(tempfile.gettempdir()) / f"sofar-cost-numba-{kernel}-{cpu}"
    return {"NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": ",".join(features),
            "NUMBA_CACHE_DIR": str(cache)}


_CHILD = """
import json, sys
from importlib import import_module
module, name, kwargs = json.loads(sys.argv[1])
result = getattr(import_module(module), name)(**kwargs)
print(json.dumps(result.to_dict() if hasattr(result, "to_dict") else result))
"""


def call_with_kernel(kernel: str, function: str, **kwargs: Any) -> Any:
    """``module:function(**kwargs)`` run with ``kernel``'s code: in this process if it
    already compiles that variant, else in a subprocess (JSON-able arguments; a result object
    comes back as its ``to_dict()``; the child's stderr passes through)."""
    env = kernel_env(kernel)
    module, name = function.split(":")
    if env is None:
        return getattr(import_module(module), name)(**kwargs)
    run = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([module, name, kwargs])],
                         env={**os.environ, **env}, stdout=subprocess.PIPE, text=True,
                         check=False)
    if run.returncode != 0:
        raise SofarError(f"the {kernel} kernel benchmark failed (exit {run.returncode}); "
                         "see the messages above")
    return json.loads(run.stdout.strip().splitlines()[-1])
