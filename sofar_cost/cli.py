"""The ``sofar-cost`` command line: list, compare, table, solve, bench, plot, check.

Each command parses its input, calls one library function and renders the result object it
gets back (:mod:`sofar_cost.results`); shared options and the error policy live in
:mod:`sofar_cost.cli_options`. Library modules are imported inside the commands, so
``--help``, ``--version`` and ``list`` never import torch.

Every user mistake surfaces as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sofar_cost.cli_options import (
    MODEL_HELP,
    CalibrationOpt,
    CountOpt,
    DatasetOpt,
    ForceCalibrationOpt,
    FormatOpt,
    InputShapeOpt,
    LatencyThreadsOpt,
    ModelArgOpt,
    StrictOpt,
    TableJsonOpt,
    WidthOpt,
    compute_and_show,
    user_errors,
)
from sofar_cost.formatting import wide_console
from sofar_cost.results import TABLE_OR_JSON

app = typer.Typer(
    help="Exact Params (Mbit) and Flops of binary CNNs, counted from the model graph.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from sofar_cost import __version__

        typer.echo(f"sofar-cost {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version,
                     is_eager=True),
    ] = False,
) -> None:
    """Exact Params (Mbit) and Flops of binary CNNs, counted from the model graph."""


@app.command("list")
@user_errors
def list_command(
    pattern: Annotated[str, typer.Argument(help="Wildcard, e.g. 'rf-*'")] = "*",
    fmt: FormatOpt = "table",
) -> None:
    """List model presets (wildcards allowed) with the paper's widths."""
    from sofar_cost.models.registry import preset_list

    compute_and_show(fmt, preset_list, pattern)


@app.command()
@user_errors
def compare(
    models: Annotated[
        list[str], typer.Argument(help=f"Models, each {MODEL_HELP}; the last is the baseline.")
    ],
    dataset: DatasetOpt = "imagenet",
    width: WidthOpt = None,
    per_layer: Annotated[bool, typer.Option("--per-layer", help="Show per-layer costs.")] = False,
    depth: Annotated[
        int | None,
        typer.Option("--depth", help="Per-layer rows summed up to this module depth (1 = top)."),
    ] = None,
    fmt: FormatOpt = "table",
    count: CountOpt = None,
    latency: Annotated[
        bool, typer.Option("--latency", help="Also predicted latency, packed and torch fp32.")
    ] = False,
    calibration: CalibrationOpt = None,
    force_calibration: ForceCalibrationOpt = False,
    threads: LatencyThreadsOpt = 1,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Params and Flops side by side, each as a share of the last-named model (the baseline)."""
    from sofar_cost.costs import compare as compare_models
    from sofar_cost.count_options import CountOptions
    from sofar_cost.model_source import load_sources

    options = CountOptions.from_flags(count)
    compute_and_show(fmt, lambda: compare_models(
        load_sources(models, model_arg, input_shape), dataset, width, options, per_layer, depth,
        strict, _calibration(calibration, force_calibration, threads) if latency else None))


def _calibration(path: Path | None, force: bool, threads: int) -> Any:
    """The latency calibration to predict with, checked against this machine unless forced."""
    from sofar_cost.latency import load_calibration

    return load_calibration(path, threads=threads, allow_mismatch=force)


@app.command()
@user_errors
def calibrate(
    threads: Annotated[int, typer.Option(help="Threads to calibrate for (kernels and torch).")]
    = 1,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File; default: the user cache directory.")
    ] = None,
    fmt: TableJsonOpt = "table",
) -> None:
    """Measure this machine's latency model (per-op costs) for --latency and --on latency."""
    from sofar_cost.latency import calibrate as run_calibration  # numba compiles: on demand

    compute_and_show(fmt, lambda: run_calibration(threads, out, progress=fmt == "table")
                     .summary(), formats=TABLE_OR_JSON)


@app.command()
@user_errors
def table(
    name: Annotated[str, typer.Argument(help="imagenet, cifar100 or ablation")],
    fmt: FormatOpt = "table",
) -> None:
    """Rebuild a SoFAR table: our counts, the paper's, and the difference."""
    from sofar_cost.paper_tables import paper_table

    compute_and_show(fmt, paper_table, name)


@app.command()
@user_errors
def solve(
    model: Annotated[str, typer.Argument(help=f"Model whose width to solve: {MODEL_HELP}.")],
    match: Annotated[str | None, typer.Option("--match", help="Baseline model.")] = None,
    on: Annotated[str, typer.Option(help="params, flops, both or latency")] = "params",
    dataset: DatasetOpt = "imagenet",
    budget_mbit: Annotated[float | None, typer.Option("--budget-mbit")] = None,
    budget_flops: Annotated[float | None, typer.Option("--budget-flops")] = None,
    multiple_of: Annotated[int, typer.Option("--multiple-of", help="e.g. 64")] = 1,
    columns: Annotated[
        str | None, typer.Option("--columns", help="Solve C = 1..6 of the family, e.g. '1..6'.")
    ] = None,
    fmt: TableJsonOpt = "table",
    budget_ms: Annotated[
        float | None, typer.Option("--budget-ms", help="Predicted packed latency limit.")
    ] = None,
    calibration: CalibrationOpt = None,
    force_calibration: ForceCalibrationOpt = False,
    threads: LatencyThreadsOpt = 1,
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
    width_arg: Annotated[
        str, typer.Option("--width-arg", help="The keyword of a user model that is varied.")
    ] = "width",
    strict: StrictOpt = False,
) -> None:
    """The largest width whose cost stays within a baseline's (or an absolute) budget."""
    from sofar_cost.model_source import load_sources
    from sofar_cost.solver import solve as solve_model

    def compute() -> Any:
        specs = [model] if match is None else [model, match]
        source, *baseline = load_sources(specs, model_arg, input_shape, width_arg)
        return solve_model(
            source, match=baseline[0] if baseline else None, dataset=dataset, on=on,
            budget_mbit=budget_mbit, budget_flops=budget_flops, multiple_of=multiple_of,
            columns=columns, budget_ms=budget_ms,
            calibration=_calibration(calibration, force_calibration, threads)
            if on == "latency" else None, strict=strict)

    compute_and_show(fmt, compute, formats=TABLE_OR_JSON)


@app.command()
@user_errors
def bench(
    model: Annotated[str, typer.Argument(help=f"Model to benchmark: {MODEL_HELP}.")],
    dataset: DatasetOpt = "imagenet",
    width: WidthOpt = None,
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
    fmt: TableJsonOpt = "table",
    model_arg: ModelArgOpt = None,
    input_shape: InputShapeOpt = None,
) -> None:
    """Time every binary conv layer (or, --end-to-end, the whole net) against torch float32."""
    from sofar_cost.layer_bench import bench as run_bench  # numba compiles: load on demand
    from sofar_cost.model_source import load_sources

    compute_and_show(fmt, lambda: run_bench(
        load_sources([model], model_arg, input_shape)[0], dataset, width, threads, repeat,
        end_to_end, fmt == "table", kernel), formats=TABLE_OR_JSON)  # fmt: skip


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
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="Also show another source's results, e.g. larq-zoo."),
    ] = None,
) -> None:
    """Published top-1 error against our computed Flops or Params, with the Pareto front."""
    from sofar_cost.plots import plot_kind  # matplotlib only when plotting

    console = wide_console()
    for path in plot_kind(kind, dataset, out, show_paper_costs=paper_costs, include=include or ()):
        console.print(f"wrote {path}")


@app.command()
@user_errors
def check(
    paths: Annotated[list[Path], typer.Argument(help="Config files or folders of *.toml.")],
    fmt: TableJsonOpt = "table",
    strict: Annotated[
        bool, typer.Option("--strict", help="As strict = true in every model of the configs.")
    ] = False,
) -> None:
    """Check model configs against their budgets: exit 0 all pass, 1 any over, 2 malformed."""
    from sofar_cost.budget import check_configs

    report = compute_and_show(fmt, check_configs, paths, strict, formats=TABLE_OR_JSON)
    for line in report.messages():
        typer.echo(line, err=True)
    raise typer.Exit(report.exit_code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
