"""A/B of the packed engine between two source trees: which one runs a preset faster.

Two long-lived worker processes, one per tree (``PYTHONPATH=TREE``, so each imports its own
``sofar_cost`` and keeps its own Numba cache), build the packed preset and time forwards in
alternating blocks (which one goes first alternates too). Only the per-block ratio B / A is
trusted: this project's VMs drift by up to 1.8x within seconds, and engine changes worth
making are 2-10%. A tree is any directory holding a ``sofar_cost`` package, e.g. a
``git worktree add /tmp/base HEAD~1``.

    python benchmarks/ab_engine.py /tmp/base . [--model bireal18] [--blocks 20] [--cold]

``--cold`` runs the float32 model before every timed forward, as ``bench --end-to-end``'s
paired rounds do. Prints each side's median and the median block ratio with its quartiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from rich.progress import Progress

from sofar_cost.kernels.bench import quartiles

WORKER = r"""
import json, sys, time
import numba, torch
from sofar_cost.binary import set_binarization
from sofar_cost.engine import pack_model
from sofar_cost.models import create_model

name, cold = sys.argv[1], sys.argv[2] == "cold"
numba.set_num_threads(1)
torch.set_num_threads(1)
packed = pack_model(create_model(name, "imagenet").eval())
fp32 = set_binarization(create_model(name, "imagenet").eval(), False)
fp32 = fp32.to(memory_format=torch.channels_last)
x = torch.randn(1, 3, 224, 224, generator=torch.manual_seed(0))
x = x.contiguous(memory_format=torch.channels_last)
with torch.inference_mode():
    for _ in range(3):  # compiles, plans
        packed(x)
    print("ready", flush=True)
    for line in sys.stdin:
        end, times = time.perf_counter() + float(line), []
        while time.perf_counter() < end:
            if cold:
                fp32(x)
            start = time.perf_counter()
            packed(x)
            times.append(time.perf_counter() - start)
        times.sort()
        print(json.dumps(1e3 * times[len(times) // 2]), flush=True)
"""


def worker(tree: Path, model: str, cold: bool) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    proc = subprocess.Popen([sys.executable, "-c", WORKER, model, "cold" if cold else "warm"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            cwd=tree)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the worker for {tree} exited (see its messages above)")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="tree A (the reference)")
    parser.add_argument("b", type=Path, help="tree B")
    parser.add_argument("--model", default="bireal18")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--block-seconds", type=float, default=0.5)
    parser.add_argument("--cold", action="store_true",
                        help="run the float32 model before every timed forward")
    args = parser.parse_args()
    for tree in (args.a, args.b):
        if not (tree / "sofar_cost" / "__init__.py").is_file():
            raise SystemExit(f"{tree}: no sofar_cost package there")
    procs = [worker(tree, args.model, args.cold) for tree in (args.a, args.b)]
    medians: list[list[float]] = [[], []]
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{args.model}: A and B in turns", total=args.blocks)
        for block in range(args.blocks):
            for side in ((0, 1) if block % 2 == 0 else (1, 0)):
                procs[side].stdin.write(f"{args.block_seconds}\n")
                procs[side].stdin.flush()
                medians[side].append(json.loads(procs[side].stdout.readline()))
            bar.advance(task)
    for proc in procs:
        proc.stdin.close()
        proc.wait()
    a, b = np.array(medians[0]), np.array(medians[1])
    q1, q3 = quartiles(b / a)
    state = "after a float32 forward each" if args.cold else "back to back"
    print(f"{args.model} ({state}): A {np.median(a):.3f} ms, B {np.median(b):.3f} ms; "
          f"B / A per block: median {np.median(b / a):.3f} (quartiles {q1:.3f}-{q3:.3f}, "
          f"{args.blocks} blocks)")


if __name__ == "__main__":
    main()
