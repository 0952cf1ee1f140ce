"""Where the packed engine's time goes: per-op wall time of one image at one thread.

Forward hooks time the outermost "ops" of the packed model (leaf modules, and the engine's
fused modules as a whole) during ordinary forwards; the rest of the forward time is Python
glue between them (concatenations, dispatch). Medians over forwards.

    python benchmarks/profile_engine.py bireal18 binarydensenet28 [--runs 20] [--cpu-time]
        [--cold]

``--cpu-time`` reads the process's CPU time instead of the wall clock: on a machine shared
with other busy processes it is far steadier (one thread: it is the time this run computed).
``--cold`` runs the float32 model (binarization off) before every forward, as the paired
end-to-end benchmark does: its weights and activations push the packed net's out of cache,
and on this project's VMs every op then runs slower than in a loop of packed forwards.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from sofar_cost.binary import set_binarization
from sofar_cost.engine import pack_model
from sofar_cost.kernels.bench import thread_count
from sofar_cost.models import create_model

FUSED = {"PackedConv", "PackedUnitRun", "PackedDenseRun", "PackedTransition", "PointwiseConv",
         "PackedHead",
         "TorchBinaryLayer"}


def ops(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Outermost modules that are leaves or fused engine modules."""
    found: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if type(child).__name__ in FUSED or not list(child.children()):
                found.append((path, child))
            else:
                visit(path, child)

    visit("", model)
    return found


def profile(name: str, runs: int, clock: Callable[[], float] = time.perf_counter,
            cold: bool = False) -> tuple[float, dict[str, float]]:
    """(median forward ms, {op kind: median ms per forward}); ``cold``: the float32 model
    runs before every forward."""
    packed = pack_model(create_model(name, "imagenet").eval())
    fp32 = set_binarization(create_model(name, "imagenet").eval(), False)
    x = torch.randn(1, 3, 224, 224, generator=torch.manual_seed(0))
    per_run: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}

    def before(module: nn.Module, _args: object) -> None:
        starts[id(module)] = clock()

    def after(module: nn.Module, _args: object, _out: object) -> None:
        per_run[type(module).__name__] += 1e3 * (clock() - starts[id(module)])

    for _, module in ops(packed):
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
    totals, kinds = [], defaultdict(list)
    with torch.inference_mode():
        for run in range(runs + 2):
            if cold:
                fp32(x)
            per_run.clear()
            start = clock()
            packed(x)
            if run >= 2:  # warm-up
                totals.append(1e3 * (clock() - start))
                for kind, ms in per_run.items():
                    kinds[kind].append(ms)
    return float(np.median(totals)), {k: float(np.median(v)) for k, v in kinds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu-time", action="store_true", help="CPU time, not wall time")
    parser.add_argument("--cold", action="store_true",
                        help="run the float32 model before every forward (as paired timing)")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    with thread_count(args.threads):
        for name in args.models:
            total, kinds = profile(name, args.runs, clock, args.cold)
            state = ", after a float32 forward each" if args.cold else ""
            print(f"{name}: {total:.2f} ms per image ({args.threads} thread(s){state})")
            for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]):
                print(f"  {kind:22s} {ms:7.2f} ms  {100 * ms / total:5.1f}%")
            glue = total - sum(kinds.values())
            print(f"  {'(glue between ops)':22s} {glue:7.2f} ms  {100 * glue / total:5.1f}%")


if __name__ == "__main__":
    main()
