"""Start-up time of the command line against ``python -c "import torch"``, interleaved.

Each round runs every command once, in turn, as a fresh process, so a load change on the
machine hits all of them alike; ratios are per round (paired), then the median over rounds.
Bars (issue 16): ``--help`` and ``list`` at most 0.35x of ``import torch``; ``compare`` 1.4x.
Writes reports/startup.md and reports/startup.json.

    python benchmarks/bench_startup.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
CLI = [sys.executable, "-m", "sofar_cost.cli"]
COMMANDS = {
    "import torch": ([sys.executable, "-c", "import torch"], None),
    "sofar-cost --help": ([*CLI, "--help"], 0.35),
    "sofar-cost --version": ([*CLI, "--version"], 0.35),
    "sofar-cost list": ([*CLI, "list"], 0.35),
    "sofar-cost compare rf-c4d8 bireal18": ([*CLI, "compare", "rf-c4d8", "bireal18"], 1.4),
}
REFERENCE = "import torch"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - start


def measure(rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for command, _ in COMMANDS.values():  # warm the file cache and bytecode once
        timed(command)
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("start-up", total=rounds * len(COMMANDS))
        for _ in range(rounds):
            for name, (command, _) in COMMANDS.items():
                progress.update(task, description=name)
                times[name].append(timed(command))
                progress.advance(task)
    return times


def summarize(times: dict[str, list[float]]) -> list[dict]:
    reference = times[REFERENCE]
    rows = []
    for name, (_, bar) in COMMANDS.items():
        ratios = [t / r for t, r in zip(times[name], reference, strict=True)]
        ratio = statistics.median(ratios)
        rows.append({
            "command": name, "median_s": statistics.median(times[name]),
            "min_s": min(times[name]), "ratio_to_import_torch": ratio, "bar": bar,
            "meets_bar": None if bar is None else ratio <= bar, "seconds": times[name],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Start-up time against `import torch`",
        "",
        f"CPU: {meta['cpu']} ({meta['logical_cpus']} logical CPUs), Python {meta['python']}; "
        f"{meta['rounds']} interleaved rounds, each command a fresh process. Ratio: per-round "
        "time / the same round's `import torch`, median over rounds.",
        "",
        "| command | median s | min s | ratio to import torch | bar | meets |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        bar = "" if r["bar"] is None else f"<= {r['bar']}"
        meets = {None: "", True: "yes", False: "NO"}[r["meets_bar"]]
        lines.append(f"| `{r['command']}` | {r['median_s']:.3f} | {r['min_s']:.3f} | "
                     f"{r['ratio_to_import_torch']:.2f} | {bar} | {meets} |")
    lines += ["", "`python benchmarks/bench_startup.py` regenerates this file.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPORTS / "startup",
                        help="output path without suffix")  # fmt: skip
    args = parser.parse_args()
    rows = summarize(measure(args.rounds))
    meta = {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "rounds": args.rounds,
            "python": platform.python_version()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, meta))
    for r in rows:
        print(f"{r['command']:38s} {r['median_s']:.3f} s  {r['ratio_to_import_torch']:.2f}x")
    print(f"wrote {args.out}.{{md,json}}")


if __name__ == "__main__":
    main()
