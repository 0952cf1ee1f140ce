"""Execute every notebooks/*.ipynb headless; exit 1 naming the notebook and cell on any error.

Each notebook runs from an in-memory copy in its own directory, so the stored notebooks keep
their stripped outputs. Run by the ``notebooks`` nox session (CI).
Usage: python benchmarks/run_notebooks.py [NOTEBOOK ...]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from rich.console import Console
from rich.progress import Progress

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "python3"
CELL_TIMEOUT_S = 600
console = Console(stderr=True)


def ensure_kernel() -> None:
    """A fresh venv may have ipykernel but no registered kernel: install it into sys.prefix."""
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL, prefix=sys.prefix)
        console.print(f"installed the {KERNEL!r} Jupyter kernel into {sys.prefix}")


def run(path: Path, progress: Progress) -> str | None:
    """Run one notebook cell by cell; the error message, or None when every cell passed."""
    notebook = nbformat.read(path, as_version=4)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    task = progress.add_task(path.name, total=len(code_cells))
    client = NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent)}},
    )
    with client.setup_kernel():
        for number, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, number)
            except CellExecutionError as error:
                return f"{path.name}: cell {number} failed:\n{error}"
            progress.advance(task)
    return None


def main(argv: list[str]) -> int:
    paths = [Path(p) for p in argv] or sorted(NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        console.print(f"no notebooks in {NOTEBOOKS}")
        return 1
    ensure_kernel()
    failures = []
    with Progress(console=console) as progress:
        for path in paths:
            start = time.perf_counter()
            error = run(path, progress)
            seconds = time.perf_counter() - start
            if error:
                failures.append(error)
                progress.console.print(f"[red]FAIL[/red] {path.name} ({seconds:.1f} s)")
            else:
                progress.console.print(f"[green]ok[/green]   {path.name} ({seconds:.1f} s)")
    for failure in failures:
        console.print(failure, markup=False, highlight=False)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
