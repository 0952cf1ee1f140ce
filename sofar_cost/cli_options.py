"""What every command shares: its common options, the user-error policy, and the renderer.

A new option used by several commands is declared here once (an ``Annotated`` type) and
named in each command's signature; a command-specific option stays in its command. Nothing
here imports torch, so ``--help``, ``--version`` and ``list`` stay quick.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sofar_cost.errors import SofarError, unknown_name_error
from sofar_cost.formatting import FORMATS, show, wide_console

DatasetOpt = Annotated[str, typer.Option("--dataset", "-d", help="imagenet or cifar100")]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json, csv or markdown")]
TableJsonOpt = Annotated[str, typer.Option("--format", "-f", help="table or json")]
WidthOpt = Annotated[
    int | None,
    typer.Option("--width", help="Width (growth rate) instead of the paper's, for every model."),
]
CalibrationOpt = Annotated[
    Path | None,
    typer.Option("--calibration", help="Latency calibration file ('sofar-cost calibrate'); "
                 "default: this machine's, in the user cache directory."),
]
ForceCalibrationOpt = Annotated[
    bool,
    typer.Option("--force-calibration", help="Use a calibration made for another CPU, kernel "
                 "variant, thread count or sofar-cost version anyway."),
]
LatencyThreadsOpt = Annotated[
    int, typer.Option("--threads", help="Threads the latency is predicted for (the calibration's).")
]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-arg",
        help="KEY=VALUE keyword for user models (repeatable; 16 is an int, true a bool).",
    ),
]
InputShapeOpt = Annotated[
    str | None,
    typer.Option("--input-shape", help="N,C,H,W input of user models, e.g. 1,3,32,32."),
]
StrictOpt = Annotated[
    bool,
    typer.Option("--strict", help="Uncounted ops that can multiply (FFTs, custom ops) are errors."),
]
MODEL_HELP = "a preset, package.module:callable or path/to/file.py:callable (importing runs it)"
CountOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--count",
        help="Also count: batchnorm, pooling, elementwise (additions, joins), bias, bn-params.",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A SofarError (a user mistake, raised by the library) becomes one line on stderr and
    exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SofarError as error:
            raise fail(str(error)) from None

    return wrapper


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    if fmt not in allowed:
        raise unknown_name_error("format", fmt, allowed)
    return fmt


def compute_and_show(
    fmt: str, compute: Callable[..., Any], *args: Any, formats: tuple[str, ...] = FORMATS,
    **kwargs: Any,
) -> Any:
    """The body of a command: check ``fmt`` (before any costly work), call the one library
    function, print the :class:`sofar_cost.results.Result` it returns, and its warnings on stderr
    (so JSON on stdout stays clean); returns the result."""
    check_format(fmt, formats)
    result = compute(*args, **kwargs)
    show(result, fmt, wide_console())
    for line in result.warnings():
        typer.echo(f"warning: {line}", err=True)
    return result
