"""Project sessions. They run in the environment nox itself was installed in (python=False):
the README's set-up command installs everything once, so no session reinstalls torch."""

from __future__ import annotations

import sys

import nox

nox.options.sessions = ["lint", "tests", "check", "notebooks"]
PY = sys.executable


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The unit tests (no timing asserts; benchmarks live in benchmarks/)."""
    session.run(PY, "-m", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    session.run(PY, "-m", "ruff", "check", ".")


@nox.session(python=False)
def check(session: nox.Session) -> None:
    """Every model config of the repository stays within its budget."""
    session.run(PY, "-m", "sofar_cost.cli", "check", "configs/")


@nox.session(python=False)
def notebooks(session: nox.Session) -> None:
    """Execute every notebook headless; any error fails the session."""
    session.run(PY, "benchmarks/run_notebooks.py", *session.posargs)


@nox.session(python=False)
def reports(session: nox.Session) -> None:
    """Regenerate the tables and figures under reports/."""
    session.run(PY, "benchmarks/make_reports.py", *session.posargs)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Benchmarks whose results go to reports/ (solver speed, kernels, end to end)."""
    session.run(PY, "benchmarks/bench_solver.py")
    session.run(PY, "benchmarks/bench_kernels.py")
