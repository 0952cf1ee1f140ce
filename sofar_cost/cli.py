"""The ``sofar-cost`` command line: list, compare, table, solve (and more as they land).

Every user mistake surfaces as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sofar_cost.budget import ModelResult, config_files, evaluate, load_config
from sofar_cost.costs import WidthCosts, model_cost
from sofar_cost.counting import CountOptions
from sofar_cost.errors import SofarError, unknown_name_error
from sofar_cost.formatting import FORMATS, Column, render, to_json, wide_console
from sofar_cost.models.registry import (
    ALIASES,
    MAX_FRACTAL_COLUMNS,
    PRESETS,
    ModelSpec,
    check_dataset,
    column_variant,
    list_models,
    resolve,
)
from sofar_cost.paper_tables import PAPER_TABLE_COLUMNS, PAPER_TABLES, paper_table_rows
from sofar_cost.solver import Budget, solve_width

app = typer.Typer(
    help="Exact Params (Mbit) and Flops of binary CNNs, counted from the model graph.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = wide_console()

COUNT_FLAGS = {
    "batchnorm": "batchnorm",
    "pooling": "pooling",
    "elementwise": "elementwise",
    "bias": "bias_params",
    "bn-params": "batchnorm_params",
}

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="imagenet or cifar100")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json, csv or markdown")]
CountOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--count",
        help="Also count: batchnorm, pooling, elementwise (additions, joins), bias, bn-params.",
    ),
]


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a SofarError into 'error: ...' on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SofarError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    if fmt not in allowed:
        raise unknown_name_error("format", fmt, allowed)
    return fmt


def count_options(count: list[str] | None) -> CountOptions:
    flags = {}
    for item in count or []:
        for name in filter(None, (part.strip() for part in item.split(","))):
            if name not in COUNT_FLAGS:
                raise unknown_name_error("--count category", name, COUNT_FLAGS)
            flags[COUNT_FLAGS[name]] = True
    return CountOptions(**flags)


COST_COLUMNS = [
    Column("model", "model"),
    Column("dataset", "dataset"),
    Column("width", "width", "d"),
    Column("params_mbit", "Params (Mbit)", ".2f"),
    Column("flops", "Flops", ".3e"),
    Column("binary_params", "binary params", ",d"),
    Column("fp_params", "FP params", ",d"),
    Column("binary_macs", "binary MACs", ",d"),
    Column("fp_macs", "FP MACs", ",d"),
]
LAYER_COLUMNS = [
    Column("name", "layer"),
    Column("kind", "type"),
    Column("binary", "binary"),
    Column("output_shape", "output"),
    Column("binary_params", "binary params", ",d"),
    Column("fp_params", "FP params", ",d"),
    Column("binary_macs", "binary MACs", ",d"),
    Column("fp_macs", "FP MACs", ",d"),
    Column("flops", "Flops", ".3e"),
]


@app.command("list")
@user_errors
def list_command(
    pattern: Annotated[str, typer.Argument(help="Wildcard, e.g. 'rf-*'")] = "*",
    fmt: FormatOpt = "table",
) -> None:
    """List model presets (wildcards allowed) with the paper's widths."""
    check_format(fmt)
    aliases = {target: alias for alias, target in ALIASES.items()}
    rows = [
        {
            "model": name,
            "alias": aliases.get(name, ""),
            "paper_name": PRESETS[name].paper_name,
            "imagenet_width": PRESETS[name].widths.get("imagenet"),
            "cifar100_width": PRESETS[name].widths.get("cifar100"),
            "baseline": PRESETS[name].baseline or "",
        }
        for name in list_models(pattern)
    ]
    if not rows:
        raise SofarError(f"no model matches {pattern!r}; try 'sofar-cost list' for all")
    columns = [Column(k, k.replace("_", " ")) for k in rows[0]]
    render(rows, columns, fmt, title="sofar-cost models")


@app.command()
@user_errors
def compare(
    models: Annotated[list[str], typer.Argument(help="Models; the last one is the baseline.")],
    dataset: DatasetOpt = "imagenet",
    width: Annotated[int | None, typer.Option(help="Override the width of every model.")] = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Show per-layer costs.")] = False,
    fmt: FormatOpt = "table",
    count: CountOpt = None,
) -> None:
    """Params and Flops side by side, each as a share of the last-named model (the baseline)."""
    check_format(fmt)
    check_dataset(dataset)
    options = count_options(count)
    reports = [model_cost(name, dataset, width, options) for name in models]
    baseline = reports[-1]
    rows = []
    for report in reports:
        row = report.summary()
        row["baseline"] = baseline.model
        row["params_ratio"] = report.params_mbit / baseline.params_mbit
        row["flops_ratio"] = report.flops / baseline.flops
        row["peak_activation_mb"] = report.peak_activation_bytes / 1e6
        if per_layer:
            row["layers"] = [r for r in report.layer_rows() if _has_cost(r)]
        rows.append(row)
    if fmt == "json":
        print(to_json(rows))
        return
    columns = [
        *COST_COLUMNS[:5],
        Column("params_pct", f"% {baseline.model} Mbit", ".1f"),
        Column("flops_pct", f"% {baseline.model} Flops", ".1f"),
        *COST_COLUMNS[5:],
        Column("peak_activation_mb", "peak act. (MB)", ".2f"),
    ]
    for row in rows:
        row["params_pct"] = 100 * row["params_ratio"]
        row["flops_pct"] = 100 * row["flops_ratio"]
    if per_layer:
        for row in rows:
            render(row["layers"], LAYER_COLUMNS, fmt, title=f"{row['model']} per layer")
    render(rows, columns, fmt, title=f"costs on {dataset} (baseline: {baseline.model})")


def _has_cost(row: dict[str, Any]) -> bool:
    keys = ("fp_params", "binary_params", "fp_macs", "binary_macs", "fp_other_ops")
    return any(row[k] for k in keys)


@app.command()
@user_errors
def table(
    name: Annotated[str, typer.Argument(help="imagenet, cifar100 or ablation")],
    fmt: FormatOpt = "table",
) -> None:
    """Rebuild a SoFAR table: our counts, the paper's, and the difference."""
    check_format(fmt)
    if name not in PAPER_TABLES:
        raise unknown_name_error("table", name, PAPER_TABLES)
    rows = paper_table_rows(name)
    render(rows, PAPER_TABLE_COLUMNS, fmt, title=f"SoFAR table: {name}")


@app.command()
@user_errors
def solve(
    model: Annotated[str, typer.Argument(help="Model (family) whose width to solve.")],
    match: Annotated[str | None, typer.Option("--match", help="Baseline model.")] = None,
    on: Annotated[str, typer.Option(help="params, flops or both")] = "params",
    dataset: DatasetOpt = "imagenet",
    budget_mbit: Annotated[float | None, typer.Option("--budget-mbit")] = None,
    budget_flops: Annotated[float | None, typer.Option("--budget-flops")] = None,
    multiple_of: Annotated[int, typer.Option("--multiple-of", help="e.g. 64")] = 1,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Solve C = 1..6 of the family, e.g. '1..6'.")
    ] = None,
    fmt: FormatOpt = "table",
) -> None:
    """The largest width whose cost stays within a baseline's (or an absolute) budget."""
    check_format(fmt, ("table", "json"))
    check_dataset(dataset)
    spec = resolve(model)
    budget, baseline_row = _budget(match, dataset, budget_mbit, budget_flops)
    baseline = baseline_row["model"] if baseline_row else None
    if columns is not None:
        specs = [column_variant(spec, c) for c in _column_range(columns, spec.family)]
        results = [_solve_one(s, budget, baseline, dataset, on, multiple_of) for s in specs]
        _print_family(results, fmt, dataset, on)
        return
    result = _solve_one(spec, budget, baseline, dataset, on, multiple_of)
    if fmt == "json":
        print(to_json(result))
        return
    rows = list(result["candidates"])
    if baseline_row:
        rows.append({"label": f"baseline {baseline}", **baseline_row})
    else:
        rows.append({"label": "budget", "params_mbit": budget.params_mbit, "flops": budget.flops})
    table_columns = [Column("label", ""), *COST_COLUMNS[3:5]]
    render(
        rows,
        table_columns,
        "table",
        title=f"{spec.name} on {dataset}: largest width within budget ({on})",
    )
    console.print(f"[bold]{spec.name}[/bold] width = [bold green]{result['width']}[/bold green]")
    if result["paper_width"] is not None and result["paper_width"] != result["width"]:
        console.print(f"the paper uses width {result['paper_width']}: {result['note']}")


def _solve_one(
    spec: ModelSpec, budget: Budget, baseline: str | None, dataset: str, on: str, multiple_of: int
) -> dict[str, Any]:
    """One solve, as the JSON contract of ``solve --format json`` (add keys, never rename)."""
    costs = WidthCosts.for_model(spec.name, dataset)
    w = solve_width(costs, budget, on, multiple_of).width
    candidates = [
        {"label": f"width {v}" + ("  <- solved" if v == w else ""), **costs.report(v).summary()}
        for v in (w - multiple_of, w, w + multiple_of)
        if v >= 1
    ]
    solved = costs.report(w)
    # The paper's width is comparable only for the paper's own pairing and rule.
    paper_width = spec.widths.get(dataset) if baseline == spec.baseline and on == "params" else None
    note = ""
    if paper_width is not None and paper_width != w:
        note = "the paper's costs for this model are not reproduced (docs/counting.md)"
    return {
        "model": spec.name,
        "baseline": baseline,
        "dataset": dataset,
        "on": on,
        "multiple_of": multiple_of,
        "columns": spec.columns,
        "width": w,
        "params_mbit": solved.params_mbit,
        "flops": solved.flops,
        "baseline_params_mbit": budget.params_mbit,
        "baseline_flops": budget.flops,
        "params_ratio": solved.params_mbit / budget.params_mbit if budget.params_mbit else None,
        "flops_ratio": solved.flops / budget.flops if budget.flops else None,
        "paper_width": paper_width,
        "note": note,
        "candidates": candidates,
    }


def _column_range(text: str, family: str) -> list[int]:
    """'1..6', '3' or '1,2,4' -> column counts, within the family's limit."""
    if family not in MAX_FRACTAL_COLUMNS:
        raise SofarError(f"--columns needs a fractal model (rf-, f-, drf-, df-), not {family!r}")
    limit = MAX_FRACTAL_COLUMNS[family]
    try:
        if ".." in text:
            low, high = (int(part) for part in text.split(".."))
            values = list(range(low, high + 1))
        else:
            values = [int(part) for part in text.split(",")]
    except ValueError:
        raise SofarError(f"--columns must look like '1..{limit}' or '2,3', got {text!r}") from None
    if not values or any(not 1 <= v <= limit for v in values):
        raise SofarError(f"--columns for {family}- must lie in 1..{limit}, got {text!r}")
    return values


def _print_family(results: list[dict[str, Any]], fmt: str, dataset: str, on: str) -> None:
    if fmt == "json":
        print(to_json(results))
        return
    for row in results:
        row["depth"] = int(row["model"].rsplit("-", 1)[1])
        for key in ("params_ratio", "flops_ratio"):
            row[key.replace("ratio", "pct")] = None if row[key] is None else 100 * row[key]
    columns = [
        Column("columns", "C", "d"), Column("model", "model"), Column("depth", "depth", "d"),
        Column("width", "width", "d"), Column("params_mbit", "Params (Mbit)", ".2f"),
        Column("flops", "Flops", ".3e"), Column("params_pct", "% budget Mbit", ".1f"),
        Column("flops_pct", "% budget Flops", ".1f"),
    ]  # fmt: skip
    render(results, columns, "table", title=f"widths within budget on {dataset} ({on})")


def _budget(
    match: str | None, dataset: str, mbit: float | None, flops: float | None
) -> tuple[Budget, dict[str, Any] | None]:
    if match is None and mbit is None and flops is None:
        raise SofarError(
            "give a baseline with --match MODEL or a budget with --budget-mbit/--budget-flops"
        )
    if match is not None and (mbit is not None or flops is not None):
        raise SofarError("use either --match or --budget-mbit/--budget-flops, not both")
    if match is None:
        return Budget(mbit, flops), None
    report = model_cost(match, dataset)
    return Budget(report.params_mbit, report.flops), report.summary()


@app.command()
@user_errors
def bench(
    model: Annotated[str, typer.Argument(help="Model preset to benchmark.")],
    dataset: DatasetOpt = "imagenet",
    threads: Annotated[int, typer.Option(help="Threads for the kernels and torch alike.")] = 1,
    repeat: Annotated[int, typer.Option(help="Timed runs per layer (median).")] = 10,
    end_to_end: Annotated[
        bool,
        typer.Option(
            "--end-to-end",
            help="Time the whole network: packed kernels vs torch fp32 vs simulated binary.",
        ),
    ] = False,
    kernel: Annotated[
        str,
        typer.Option(help="Popcount path: auto, avx512, avx2 or scalar (others compile for a "
                     "CPU without the newer instructions, in a subprocess)."),
    ] = "auto",
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Time every binary conv layer (or, --end-to-end, the whole net) against torch float32."""
    check_format(fmt, ("table", "json"))
    check_dataset(dataset)
    if end_to_end:
        _bench_end_to_end(model, dataset, threads, repeat, fmt, kernel)
        return
    from sofar_cost.layer_bench import bench_model_layers  # numba compiles: load on demand

    result = bench_model_layers(model, dataset, None, threads, repeat, progress=fmt == "table",
                                kernel=kernel)
    if fmt == "json":
        print(to_json(result))
        return
    columns = [
        Column("name", "layer"), Column("in_channels", "in", "d"),
        Column("out_channels", "out", "d"), Column("height", "H", "d"),
        Column("stride", "stride", "d"), Column("binary_macs", "binary MACs", ",d"),
        Column("flops", "Flops", ".3g"), Column("ms_xnor", "ms XNOR", ".3f"),
        Column("ms_torch_fp32", "ms torch fp32", ".3f"), Column("speedup", "speed-up", ".1f"),
        Column("gmacs_per_s", "G bMAC/s", ".0f"), Column("ceiling_fraction", "of ceiling", ".0%"),
    ]  # fmt: skip
    render(result["layers"], columns, "table", title=f"{result['model']} on {dataset}, "
           f"{threads} thread(s), kernel {result['kernel_variant']}")  # fmt: skip
    console.print(
        f"total: XNOR {result['total_ms_xnor']:.2f} ms, torch fp32 "
        f"{result['total_ms_torch_fp32']:.2f} ms, speed-up {result['total_speedup']:.1f}x "
        f"(worst layer {result['worst_speedup']:.1f}x); popcount ceilings (G binary MACs/s "
        "per core): " + ", ".join(f"{v} {g:.0f}" for v, g in result["popcount_ceilings"].items())
    )


def _bench_end_to_end(model: str, dataset: str, threads: int, repeat: int, fmt: str,
                      kernel: str) -> None:
    from sofar_cost.kernels.targets import call_with_kernel  # numba compiles: load on demand

    result = call_with_kernel(kernel, "sofar_cost.engine:benchmark_end_to_end", name=model,
                              dataset=dataset, threads=threads, repeat=repeat,
                              progress=fmt == "table" and kernel == "auto")
    if fmt == "json":
        print(to_json(result))
        return
    columns = [
        Column("model", "model"), Column("flops", "Flops", ".3g"),
        Column("ms_packed", "ms packed", ".2f"), Column("ms_torch_fp32", "ms torch fp32", ".2f"),
        Column("ms_torch_binary_sim", "ms sim", ".1f"),
        Column("speedup_vs_fp32", "speed-up", ".2f"),
    ]  # fmt: skip
    render([result], columns, "table", title=f"{result['model']} on {dataset}, end to end, "
           f"{threads} thread(s), kernel {result['kernel_variant']}")  # fmt: skip


PLOT_KINDS = {"accuracy-vs-flops": "flops", "accuracy-vs-params": "params"}


@app.command()
@user_errors
def plot(
    kind: Annotated[str, typer.Argument(help="accuracy-vs-flops or accuracy-vs-params")],
    dataset: DatasetOpt = "imagenet",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File (.png or .svg; both are written)."),
    ] = None,
    paper_costs: Annotated[
        bool, typer.Option("--paper-costs", help="Also mark the paper's printed costs.")
    ] = False,
) -> None:
    """Published top-1 error against our computed Flops or Params, with the Pareto front."""
    from sofar_cost.plots import plot_accuracy  # matplotlib only when plotting

    if kind not in PLOT_KINDS:
        raise SofarError(f"unknown plot {kind!r}; valid: {', '.join(PLOT_KINDS)}")
    for path in plot_accuracy(PLOT_KINDS[kind], dataset, out, show_paper_costs=paper_costs):
        console.print(f"wrote {path}")


@app.command()
def check(
    paths: Annotated[list[Path], typer.Argument(help="Config files or folders of *.toml.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Check model configs against their budgets: exit 0 all pass, 1 any over, 2 malformed."""
    errors: list[str] = []
    results: list[ModelResult] = []
    try:
        check_format(fmt, ("table", "json"))
        files = config_files(paths)
    except SofarError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    for path in files:
        try:
            entries = load_config(path)
        except SofarError as error:
            errors.append(str(error))
            continue
        results += [evaluate(path, entry) for entry in entries]
    if fmt == "json":
        print(
            to_json(
                {
                    "passed": not errors and all(r.passed for r in results),
                    "errors": errors,
                    "models": [r.to_dict() for r in results],
                }
            )
        )
    else:
        _print_check(results)
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    for result in results:
        for c in result.checks:
            if not c.passed:
                typer.echo(
                    f"over budget: {result.label} ({result.file}): {c.metric} {c.value:.6g} > "
                    f"{c.limit:.6g} ({c.source}) by {c.excess:.6g}"
                    + (" Mbit" if c.metric == "params" else " Flops"),
                    err=True,
                )
    if errors:
        raise typer.Exit(2)
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def _print_check(results: list[ModelResult]) -> None:
    rows = [
        {
            "file": r.file,
            "name": r.label,
            "dataset": r.dataset,
            "width": r.width,
            "metric": c.metric,
            "value": c.value,
            "limit": c.limit,
            "source": c.source,
            "status": "[green]pass[/green]" if c.passed else "[red]OVER[/red]",
            "excess": c.excess if not c.passed else None,
        }
        for r in results
        for c in r.checks
    ]
    columns = [
        Column("file", "file"), Column("name", "model"), Column("dataset", "dataset"),
        Column("width", "width", "d"), Column("metric", "metric"), Column("value", "value", ".6g"),
        Column("limit", "limit", ".6g"), Column("source", "budget"), Column("status", "status"),
        Column("excess", "excess", ".4g"),
    ]  # fmt: skip
    render(rows, columns, "table", title="budget check")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
