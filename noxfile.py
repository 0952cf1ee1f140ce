"""Project sessions. They run in the environment nox itself was installed in (python=False):
the README's set-up command installs everything once, so no session reinstalls torch."""

from __future__ import annotations

import sys
from pathlib import Path

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


# The peer benchmark's own environment (never a dependency of sofar-cost): install order
# matters, larq-compute-engine goes in after TensorFlow and an old protobuf.
LCE_ENV = [["tensorflow-cpu==2.15.1", "larq==0.14.0", "larq-zoo==2.4.0", "protobuf<3.21"],
           ["larq-compute-engine==0.16.0"]]


@nox.session(python="3.11", reuse_venv=True)
def bench_lce(session: nox.Session) -> None:
    """sofar-cost vs Larq Compute Engine end to end (reports/vs_lce.*); not a default session.

    Builds (once; reused on later runs) a virtualenv with TensorFlow and LCE for the TF
    worker; the script itself and the sofar-cost worker run in this project's environment.
    """
    tf_python = str(Path(session.virtualenv.location) / "bin" / "python")
    ready = session.run("python", "-c", "import larq_compute_engine, larq_zoo",
                        success_codes=[0, 1], silent=True, log=False)
    if "Error" in str(ready):  # not built yet (silent runs return their output)
        for packages in LCE_ENV:
            session.install(*packages)
    session.run(PY, "benchmarks/bench_vs_lce.py", "--tf-python", tf_python, *session.posargs,
                external=True)
