"""SoFAR Tables 1-3 rebuilt: our counts beside the paper's, read from the published-results file.

A row is *reproduced* when our Params equal the paper's at its printed precision (0.01 Mbit)
and our Flops equal its printed three significant digits.
"""

from __future__ import annotations

import math
from typing import Any

from sofar_cost.costs import model_cost
from sofar_cost.errors import unknown_name_error
from sofar_cost.published import load_published
from sofar_cost.results import PAPER_TABLE_COLUMNS as PAPER_TABLE_COLUMNS
from sofar_cost.results import PaperTable

# table name -> (SoFAR table number, dataset)
PAPER_TABLES = {
    "imagenet": (1, "imagenet"),
    "cifar100": (2, "cifar100"),
    "ablation": (3, "cifar100"),
}

UNREPRODUCIBLE_NOTE = "paper row not reproducible (see docs/counting.md)"


def same_at_printed_precision(ours: float, paper: float, kind: str) -> bool:
    """Params: equal to 0.01 Mbit. Flops: equal at three significant digits."""
    if kind == "params":
        return math.isclose(round(ours, 2), paper, abs_tol=1e-9)
    return math.isclose(float(f"{ours:.2e}"), paper, rel_tol=1e-9)


def paper_table(table: str) -> PaperTable:
    """``sofar-cost table NAME``: the rebuilt table as a result object."""
    return PaperTable(table, paper_table_rows(table))


def paper_table_rows(table: str) -> list[dict[str, Any]]:
    if table not in PAPER_TABLES:
        raise unknown_name_error("table", table, PAPER_TABLES)
    number, dataset = PAPER_TABLES[table]
    published = load_published("sofar", dataset)
    published = published[(published["table"] == number) & (published["bits"] == 1)]
    rows = []
    for entry in published.itertuples():
        report = model_cost(entry.preset, dataset, int(entry.width))
        row: dict[str, Any] = {
            "paper_model": entry.model_printed,
            **report.summary(),
            "paper_params_mbit": entry.params_mbit,
            "paper_flops": entry.flops,
            "top1_error": entry.top1_error,
        }
        has_paper = not (math.isnan(entry.params_mbit) or math.isnan(entry.flops))
        if has_paper:
            row["params_diff_mbit"] = report.params_mbit - entry.params_mbit
            row["flops_diff_pct"] = 100 * (report.flops - entry.flops) / entry.flops
            row["reproduced"] = same_at_printed_precision(
                report.params_mbit, entry.params_mbit, "params"
            ) and same_at_printed_precision(report.flops, entry.flops, "flops")
            row["note"] = "" if row["reproduced"] else UNREPRODUCIBLE_NOTE
        else:
            row["reproduced"] = None
            row["note"] = "no costs printed in this table"
        row["match"] = {True: "yes", False: "NO", None: "-"}[row["reproduced"]]
        rows.append(row)
    return rows
