"""Benchmark the packed binary conv kernels against torch fp32 on Bi-Real ResNet-18 shapes.

Runs the four stride-1 3x3 layers and the three stride-2 layers at each thread count,
plus the one-thread popcount ceiling; prints a rich table and writes
``reports/kernels/kernels.md`` and ``kernels.json`` (see ``--help``).

    python benchmarks/bench_kernels.py                      # 1 and 2 threads
    python benchmarks/bench_kernels.py --threads 1 2 4 8 16 --name xeon16 --no-md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import llvmlite.binding as llvm
import numba
import torch
from rich.console import Console
from rich.table import Table

from sofar_cost.kernels import cpu_features, kernel_variant, measure_popcount_ceiling
from sofar_cost.kernels.bench import (
    BIREAL18_SHAPES,
    BIREAL18_STRIDE2_SHAPES,
    benchmark_layers,
    best_of_rounds,
    thread_count,
)

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports" / "kernels"


def cpu_info() -> dict:
    """Model name, core count and the SIMD features that matter for the variant choice."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    interesting = ("popcnt", "avx2", "avx512f", "avx512vpopcntdq")
    return {
        "model": model,
        "llvm_cpu": numba.config.CPU_NAME or llvm.get_host_cpu_name(),
        "logical_cpus": os.cpu_count(),
        "features": sorted(f for f in cpu_features() if f in interesting),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numba": numba.__version__,
    }


def run(thread_counts: list[int], repeat: int, ceiling_seconds: float, rounds: int) -> dict:
    """``rounds`` passes over every thread count, interleaved; each row keeps each side's
    best round (see ``best_of_rounds``)."""
    with thread_count(1):
        ceiling = measure_popcount_ceiling(seconds=ceiling_seconds)
    shapes = BIREAL18_SHAPES + BIREAL18_STRIDE2_SHAPES
    passes: dict[tuple[str, int], list[dict]] = {}
    for _ in range(rounds):
        for n in thread_counts:
            for row in benchmark_layers(shapes, threads=n, repeat=repeat):
                passes.setdefault((row["name"], n), []).append(row)
    rows = [best_of_rounds(found) for found in passes.values()]
    one = {r["name"]: r["ms_xnor"] for r in rows if r["threads"] == 1}
    for r in rows:
        r["pct_of_ceiling"] = 100 * r["gmacs_per_s"] * 1e9 / (ceiling * r["threads"])
        if r["name"] in one:
            r["scaling_vs_1_thread"] = one[r["name"]] / r["ms_xnor"]
    return {
        "cpu": cpu_info(),
        "variant": kernel_variant(),
        "popcount_ceiling_gmacs_per_s_1_thread": ceiling / 1e9,
        "repeat": repeat,
        "rounds": rounds,
        "results": rows,
    }


def table(report: dict) -> Table:
    t = Table(title=f"packed binary conv vs torch fp32 — variant {report['variant']}, "
              f"ceiling {report['popcount_ceiling_gmacs_per_s_1_thread']:.0f} GMAC/s/core")
    for col in ("layer", "thr", "ms xnor", "ms torch", "GMAC/s", "% ceil", "speedup",
                "scaling"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in report["results"]:
        scaling = r.get("scaling_vs_1_thread")
        t.add_row(r["name"], str(r["threads"]), f"{r['ms_xnor']:.3f}",
                  f"{r['ms_torch_fp32']:.3f}", f"{r['gmacs_per_s']:.0f}",
                  f"{r['pct_of_ceiling']:.0f}", f"{r['speedup']:.1f}x",
                  "" if scaling is None else f"{scaling:.2f}x")
    return t


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    lines = [
        "# Packed binary conv kernels: benchmark",
        "",
        f"- CPU: {cpu['model']} (LLVM `{cpu['llvm_cpu']}`), {cpu['logical_cpus']} logical "
        f"CPUs, features {', '.join(cpu['features'])}",
        f"- kernel variant: `{report['variant']}`; torch {cpu['torch']} "
        f"({cpu['torch_cpu_capability']}), numba {cpu['numba']}",
        f"- popcount ceiling (XOR + popcount + add, L1-resident, 1 thread): "
        f"{report['popcount_ceiling_gmacs_per_s_1_thread']:.0f} G binary MACs/s",
        f"- median of {report['repeat']} runs after warm-up, the best of {report['rounds']} "
        "rounds (thread counts interleaved) for each side; xnor time includes packing the "
        "float input; both sides take the better of an NCHW and a channels_last float input "
        "(xnor columns show both); batch 1, 3x3, pad 1",
        "",
        "| layer | threads | ms xnor | (NCHW / ch-last) | ms torch fp32 | G binary MAC/s "
        "| % of ceiling | speedup | scaling vs 1 thread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        scaling = r.get("scaling_vs_1_thread")
        lines.append(
            f"| {r['name']} | {r['threads']} | {r['ms_xnor']:.3f} "
            f"| {r['ms_xnor_nchw']:.3f} / {r['ms_xnor_channels_last']:.3f} "
            f"| {r['ms_torch_fp32']:.3f} "
            f"| {r['gmacs_per_s']:.0f} | {r['pct_of_ceiling']:.0f} | {r['speedup']:.1f}x | "
            + ("" if scaling is None else f"{scaling:.2f}x") + " |")
    lines.append("")
    lines.append("% of ceiling is per thread used (GMAC/s / (threads x 1-thread ceiling)).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5,
                        help="passes over all thread counts; each side keeps its best")
    parser.add_argument("--ceiling-seconds", type=float, default=1.0)
    parser.add_argument("--out-dir", type=Path, default=REPORT_DIR)
    parser.add_argument("--name", default="kernels", help="basename of the .json/.md files")
    parser.add_argument("--no-md", action="store_true", help="write only the JSON")
    args = parser.parse_args()

    report = run(args.threads, args.repeat, args.ceiling_seconds, args.rounds)
    Console(width=140).print(table(report))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_md:
        (args.out_dir / f"{args.name}.md").write_text(markdown(report))
    print(f"wrote {args.out_dir / args.name}.json")


if __name__ == "__main__":
    main()
