"""Time solving every width printed in SoFAR Tables 1-2 (11 RF + 6 DRF), from cold caches.

Writes reports/solver/solver_bench.md and .json. Bar: under 10 s in total on the 2-core
development machine.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track

from sofar_cost.costs import WidthCosts
from sofar_cost.formatting import Column, markdown_table
from sofar_cost.models.registry import resolve
from sofar_cost.published import load_published
from sofar_cost.solver import Budget, solve_width

OUT = Path(__file__).resolve().parents[1] / "reports" / "solver"


def paper_rows() -> list[tuple[str, str, int]]:
    """(preset, dataset, printed width) of every fractal row in SoFAR Tables 1-2."""
    table = load_published("sofar")
    table = table[table["table"].isin([1, 2]) & (table["bits"] == 1)]
    return [
        (row.preset, row.dataset, int(row.width))
        for row in table.itertuples()
        if resolve(row.preset).columns is not None
    ]


def main() -> None:
    rows = []
    start = time.perf_counter()
    baselines: dict[tuple[str, str], float] = {}
    for preset, dataset, paper_width in track(paper_rows(), description="solving paper widths"):
        t0 = time.perf_counter()
        spec = resolve(preset)
        key = (spec.baseline, dataset)
        if key not in baselines:
            base = WidthCosts.for_model(spec.baseline, dataset)
            baselines[key] = base.params_mbit(resolve(spec.baseline).widths[dataset])
        width = solve_width(WidthCosts.for_model(preset, dataset), Budget(baselines[key])).width
        rows.append({
            "model": preset, "dataset": dataset, "baseline": spec.baseline,
            "paper_width": paper_width, "solved_width": width,
            "same": width == paper_width, "seconds": time.perf_counter() - t0,
        })  # fmt: skip
    total = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"total_seconds": total, "machine": platform.processor() or platform.machine(),
              "rows": rows}  # fmt: skip
    (OUT / "solver_bench.json").write_text(json.dumps(result, indent=2))
    columns = [Column("model", "model"), Column("dataset", "dataset"),
               Column("baseline", "baseline"), Column("paper_width", "paper", "d"),
               Column("solved_width", "solved", "d"), Column("same", "same"),
               Column("seconds", "s", ".2f")]  # fmt: skip
    (OUT / "solver_bench.md").write_text(
        "# Solving every width of SoFAR Tables 1-2\n\n"
        "`python benchmarks/bench_solver.py` (rule: largest width with Params <= baseline's)\n\n"
        + markdown_table(rows, columns)
        + f"\n\nTotal: {total:.2f} s for {len(rows)} solves, cold caches.\n"
    )
    Console().print(f"{len(rows)} widths solved in [bold]{total:.2f} s[/bold]; "
                    f"{sum(r['same'] for r in rows)} equal the paper's")  # fmt: skip


if __name__ == "__main__":
    main()
