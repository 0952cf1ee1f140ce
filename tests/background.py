"""Independent slow work that the test session starts at once, in processes of its own.

Why: the tests run in one process, one at a time, on a two-core machine, and some checks need
a fresh Python process of their own and nothing from the other tests: the x86 kernel
variants, compiled for other CPUs into fresh Numba caches (~45 s of one core), a layer call
as the first parallel code of a process that loads it from a cache built in steps, and a
trace in a process that has never imported ``torch._dynamo`` or sympy. ``conftest.py`` starts them
when the tests are collected, at low priority, and runs the tests that read them last
(:data:`TESTS`); such a test waits for its job (:func:`outcome`) and reports its failure.
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


NO_DYNAMO_CHECK = """
import sys
import torch
from sofar_cost.costs import model_cost
from sofar_cost.counting import CountOptions
from sofar_cost.tracer import _CostMode
first = model_cost("rf-c4d8", "cifar100")
assert "torch._dynamo" not in sys.modules, "a trace imported torch._dynamo"
assert "sympy" not in sys.modules, "a trace imported sympy (torch's Python meta functions)"
import torch._dynamo  # once loaded (torch.compile in use), torch's real disabler takes over
again = model_cost("rf-c4d8", "cifar100", options=CountOptions(pooling=True))  # not cached
assert (again.fp_macs, again.binary_macs) == (first.fp_macs, first.binary_macs)
raw = _CostMode.__torch_dispatch__.__wrapped__
assert raw.__dynamo_disable.__module__.startswith("torch._dynamo"), raw.__dynamo_disable
"""


# A layer call is pack_and_conv, a cached function calling the cached parallel kernels. When
# it was compiled while they came from the cache, its machine code does not start Numba's
# threading layer; as a process's first parallel code it then called a null pointer.
CACHED_CALLER_STEP = """
import sys
import numpy as np, torch
from sofar_cost.kernels import PackedBinaryConv2d
from sofar_cost.kernels._conv_kernel import conv_kernel, empty_planes, pack_into
x, w = torch.randn(1, 20, 10, 10), torch.randn(6, 20, 1, 1)
layer = PackedBinaryConv2d.from_weight(w, 1, 0)
if sys.argv[1] == "kernels":  # the kernels alone, into the cache
    plan = layer._plan_for(10, 10)
    buffer, planes = empty_planes(1, 1, 1, *plan.phase_shape)
    pack_into(x.numpy(), False, 0, 1, planes)
    conv_kernel(buffer, planes[0, 0].size, *plan.kernel_args(layer._kernel_weights,
                                                           layer.empty_output(1, plan)))
else:  # "layer": compiled from the cached kernels, then loaded from the cache
    ref = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0),
                                     torch.where(w >= 0, 1.0, -1.0)).numpy()
    np.testing.assert_array_equal(layer(x), ref)
"""
CACHED_CALLER_CHECK = f"""
import subprocess, sys
for step in ("kernels", "layer", "layer"):
    run = subprocess.run([sys.executable, "-c", {CACHED_CALLER_STEP!r}, step],
                         capture_output=True, text=True)
    assert run.returncode == 0, f"step {{step}}: exit {{run.returncode}} {{run.stderr[-1500:]}}"
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
        start(f"x86 {variant}", [sys.executable, "-c", VARIANT_CHECK, variant], env, nice=19)


def start_cached_caller_check() -> None:
    cache = tempfile.TemporaryDirectory(prefix="sofar-cached-caller-")
    _CACHES.append(cache)
    start("cached caller", [sys.executable, "-c", CACHED_CALLER_CHECK],
          dict(os.environ, NUMBA_CACHE_DIR=cache.name), nice=19)


def start_no_dynamo_check() -> None:
    start("no dynamo", [sys.executable, "-c", NO_DYNAMO_CHECK], nice=19)


# The tests that read a job, with the function that starts it.
TESTS = {"test_x86_variants_match_torch": start_x86_variant_checks,
         "test_layer_call_from_a_cache_built_in_steps": start_cached_caller_check,
         "test_trace_does_not_import_dynamo": start_no_dynamo_check}


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
