"""One renderer for every command's rows: rich table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

FORMATS = ("table", "json", "csv", "markdown")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = ""  # a format spec for numbers, e.g. ",d", ".2f", ".3g"


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _plain(value: Any) -> Any:
    """JSON-safe: NaN becomes null, numpy scalars become Python numbers."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def to_json(data: Any) -> str:
    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return _plain(obj)

    return json.dumps(clean(data), indent=2)


def render(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    fmt: str,
    title: str = "",
    console: Console | None = None,
) -> None:
    """Print ``rows`` as ``fmt``; JSON keeps every key of each row (a contract)."""
    console = console or wide_console()
    if fmt == "json":
        print(to_json(list(rows)))
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        writer.writerows([[_plain(r.get(c.key)) for c in columns] for r in rows])
        print(buffer.getvalue(), end="")
    elif fmt == "markdown":
        print(markdown_table(rows, columns))
    else:
        table = Table(title=title or None)
        for c in columns:
            table.add_column(c.header, justify="right" if c.fmt else "left")
        for r in rows:
            table.add_row(*[_cell(r.get(c.key), c.fmt) for c in columns])
        console.print(table)


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output is piped."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=200)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r.get(c.key), c.fmt) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def show(result: Any, fmt: str, console: Console | None = None) -> None:
    """Print a :class:`sofar_cost.results.Result` as ``fmt``: its JSON contract, or each of
    its tables followed (in the ``table`` format) by its notes."""
    if fmt == "json":
        print(to_json(result.to_dict()))
        return
    console = console or wide_console()
    for section in result.sections():
        render(section.rows, section.columns, fmt, section.title, console)
    if fmt == "table":
        for line in result.notes():
            console.print(line)
