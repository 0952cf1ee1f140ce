"""Benchmark the packed binary conv kernels against torch fp32 on Bi-Real ResNet-18 shapes.

Runs the four stride-1 3x3 layers and the three stride-2 layers at each thread count, plus
the one-thread popcount ceiling of every variant the compile target can run, for each
kernel asked for (``--kernel``, by default every x86 path this CPU can run: the others are
compiled for this CPU with AVX-512, or AVX2 and AVX-512, switched off, in a subprocess);
prints a rich table per kernel and writes ``reports/kernels/kernels.md`` and ``.json`` for
this CPU's own kernel and ``kernels-<kernel>.md`` / ``.json`` for the others (see ``--help``).

    python benchmarks/bench_kernels.py                      # 1 and 2 threads, every kernel
    python benchmarks/bench_kernels.py --kernel avx2 --threads 1
    python benchmarks/bench_kernels.py --threads 1 2 4 8 16 --name xeon16 --no-md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sofar_cost.kernels import kernel_variant, runnable_variants
from sofar_cost.kernels.targets import KERNELS, call_with_kernel

REPORT_DIR = Path(__file__).resolve().parents[1] / "reports" / "kernels"


def table(report: dict) -> Table:
    t = Table(title=f"packed binary conv vs torch fp32 — variant {report['variant']}; "
              f"ceilings (GMAC/s/core): {_ceilings(report)}")
    for col in ("layer", "thr", "ms xnor", "ms torch", "GMAC/s", "% ceil", "% scalar ceil",
                "speedup", "scaling"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for r in report["results"]:
        scaling = r.get("scaling_vs_1_thread")
        t.add_row(r["name"], str(r["threads"]), f"{r['ms_xnor']:.3f}",
                  f"{r['ms_torch_fp32']:.3f}", f"{r['gmacs_per_s']:.0f}",
                  f"{r['pct_of_ceiling']:.0f}", _pct(r.get("pct_of_scalar_ceiling")),
                  f"{r['speedup']:.1f}x", "" if scaling is None else f"{scaling:.2f}x")
    return t


def _ceilings(report: dict) -> str:
    return ", ".join(f"{v} {g:.0f}" for v, g in report["popcount_ceilings"].items())


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def markdown(report: dict) -> str:
    cpu = report["cpu"]
    lines = [
        f"# Packed binary conv kernels: benchmark (`--kernel {report.get('kernel', 'auto')}`)",
        "",
        f"- CPU: {cpu['model']} (LLVM `{cpu['llvm_cpu']}`), {cpu['logical_cpus']} logical "
        f"CPUs, features {', '.join(cpu['features'])}"
        + (" (compile target: this CPU with newer instruction sets switched off)"
           if cpu.get("features_overridden") else ""),
        f"- kernel variant: `{report['variant']}`; torch {cpu['torch']} "
        f"({cpu['torch_cpu_capability']}), numba {cpu['numba']}",
        "- popcount ceilings (XOR + popcount + add on L1-resident words, counted as each "
        f"variant counts in the convolution step, 1 thread, G binary MACs/s): "
        f"{_ceilings(report)}",
        f"- median of {report['repeat']} rounds after warm-up, the four timings (xnor and "
        "torch, NCHW and channels_last input) interleaved within each round; the best of "
        f"{report['rounds']} such passes (thread counts interleaved) for each side; xnor time "
        "includes packing the float input; both sides take the better input layout (xnor "
        "columns show both); batch 1, 3x3, pad 1",
        "",
        "| layer | threads | ms xnor | (NCHW / ch-last) | ms torch fp32 | G binary MAC/s "
        "| % of ceiling | % of scalar ceiling | speedup | scaling vs 1 thread |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        scaling = r.get("scaling_vs_1_thread")
        lines.append(
            f"| {r['name']} | {r['threads']} | {r['ms_xnor']:.3f} "
            f"| {r['ms_xnor_nchw']:.3f} / {r['ms_xnor_channels_last']:.3f} "
            f"| {r['ms_torch_fp32']:.3f} "
            f"| {r['gmacs_per_s']:.0f} | {r['pct_of_ceiling']:.0f} "
            f"| {_pct(r.get('pct_of_scalar_ceiling'))} | {r['speedup']:.1f}x | "
            + ("" if scaling is None else f"{scaling:.2f}x") + " |")
    lines.append("")
    lines.append("% of ceiling is per thread used (GMAC/s / (threads x 1-thread ceiling of the "
                 "kernel's variant)); % of scalar ceiling likewise against `scalar-popcnt`.")
    return "\n".join(lines) + "\n"


def kernels_to_run(choice: str) -> list[str]:
    """``auto`` (this CPU's own path) first, then every other x86 path it can run."""
    if choice != "all":
        return [choice]
    others = [k for k, v in KERNELS.items() if v in runnable_variants() and v != kernel_variant()]
    return ["auto", *others]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="all", choices=["all", "auto", *KERNELS],
                        help="popcount path(s) to benchmark (default: every one this CPU runs)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=30,
                        help="interleaved rounds per layer and pass (median)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="passes over all thread counts; each side keeps its best")
    parser.add_argument("--ceiling-seconds", type=float, default=1.0)
    parser.add_argument("--out-dir", type=Path, default=REPORT_DIR)
    parser.add_argument("--name", default="kernels", help="basename of the .json/.md files")
    parser.add_argument("--no-md", action="store_true", help="write only the JSON")
    args = parser.parse_args()

    args.out_dir.mkdir(parents=True, exist_ok=True)
    for kernel in kernels_to_run(args.kernel):
        report = call_with_kernel(kernel, "sofar_cost.kernels.bench:kernel_report",
                                  thread_counts=args.threads, repeat=args.repeat,
                                  ceiling_seconds=args.ceiling_seconds, rounds=args.rounds,
                                  progress=kernel == "auto")
        report["kernel"] = kernel
        Console(width=160).print(table(report))
        name = args.name if kernel == "auto" else f"{args.name}-{kernel}"
        (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        if not args.no_md:
            (args.out_dir / f"{name}.md").write_text(markdown(report))
        print(f"wrote {args.out_dir / name}.json")


if __name__ == "__main__":
    main()
