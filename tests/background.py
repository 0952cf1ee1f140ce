"""Independent slow work that the test session starts at once, in processes of its own.

Why: the tests run in one process, one at a time, on a two-core machine, and some work needs
nothing from the others: the x86 kernel variants' checks compile the kernels for other CPUs
into fresh Numba caches (~45 s of one core). ``conftest.py`` starts them when the tests are
collected, at low priority; the test that needs a job's result waits for it
(:func:`outcome`), and a job that fails is reported by that test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import llvmlite.binding as llvm

JOBS: dict[str, subprocess.Popen] = {}
_CACHES: list[tempfile.TemporaryDirectory] = []

# Enough of Haswell's features for Numba to compile for it: AVX2 and scalar popcnt only.
HASWELL = "+avx,+avx2,+popcnt,+sse4.2,+fma,+bmi,+bmi2,+cx16,+lzcnt,+movbe,+f16c"
# Sandy Bridge: AVX without AVX2, so scalar popcnt.
SANDYBRIDGE = "+avx,+popcnt,+sse4.2,+cx16"
X86_VARIANTS = [("haswell", HASWELL, "avx2-carry-save"),
                ("sandybridge", SANDYBRIDGE, "scalar-popcnt")]
VARIANT_CHECK = """
import sys
import numpy as np, torch
from sofar_cost.kernels import PackedBinaryConv2d, kernel_variant
from sofar_cost.kernels._conv_kernel import conv_kernel
assert kernel_variant() == sys.argv[1], kernel_variant()
for n, cin, cout, size, k, stride, pad in [(2, 70, 13, 9, 3, 2, 1), (1, 20, 6, 40, 3, 1, 1),
                                           (1, 130, 9, 11, 7, 1, 3), (1, 200, 5, 6, 1, 1, 0)]:
    x, w = torch.randn(n, cin, size, size), torch.randn(cout, cin, k, k)
    x[0, :, 0, 0] = 1.0  # all-ones words: the largest byte counts
    w[0] = 1.0
    sx, sw = torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0)
    ref = torch.nn.functional.conv2d(sx, sw, stride=stride, padding=pad).numpy()
    np.testing.assert_array_equal(PackedBinaryConv2d.from_weight(w, stride, pad)(x), ref)
asm = "".join(conv_kernel.inspect_asm().values())  # compiled just now: fresh cache
assert "zmm" not in asm and "vpopcnt" not in asm, "AVX-512 code in a non-AVX-512 build"
assert ("vpshufb" in asm) == (sys.argv[1] == "avx2-carry-save")
"""


def host_has(features: str) -> bool:
    host = set(llvm.get_host_cpu_features().flatten().replace("+", "").split(","))
    return set(features.replace("+", "").split(",")) <= host


def start(name: str, argv: list[str], env: dict[str, str] | None = None,
          nice: int = 0) -> None:
    """Start job ``name`` (once per session); ``nice`` lowers its priority below the tests'."""
    if name not in JOBS:
        JOBS[name] = subprocess.Popen(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=(lambda: os.nice(nice)) if nice else None)


def start_x86_variant_checks() -> None:
    """Each variant compiled for its CPU into a fresh Numba cache (its machine-code check
    reads this compile), at low priority: the tests come first."""
    if any(name.startswith("x86 ") for name in JOBS):
        return
    cache = tempfile.TemporaryDirectory(prefix="sofar-x86-")
    _CACHES.append(cache)
    for cpu, features, variant in X86_VARIANTS:
        env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features,
                   NUMBA_CACHE_DIR=str(Path(cache.name) / cpu))
        start(f"x86 {variant}", [sys.executable, "-c", VARIANT_CHECK, variant], env, nice=10)


def outcome(name: str, timeout: float = 900) -> tuple[int, str]:
    """(exit code, stderr) of job ``name``, waiting for it to end."""
    _, stderr = JOBS[name].communicate(timeout=timeout)
    return JOBS[name].returncode, stderr


def stop_all() -> None:
    for job in JOBS.values():
        if job.poll() is None:
            job.kill()
            job.wait()
    JOBS.clear()
    for cache in _CACHES:
        cache.cleanup()
    _CACHES.clear()
