"""Shared fixtures (cost reports cached per model, dataset and width) and the session hooks
that start the background jobs of tests/background.py and run their tests last."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import numba
import pytest

from sofar_cost.costs import model_cost
from sofar_cost.kernels.bench import thread_count
from sofar_cost.tracer import CostReport

import background


@pytest.fixture
def two_threads() -> Iterator[None]:
    """Numba and torch at two threads for the test (skipped where Numba has one)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here (NUMBA_NUM_THREADS)")
    with thread_count(2):
        yield


@cache
def cost(name: str, dataset: str = "imagenet", width: int | None = None) -> CostReport:
    return model_cost(name, dataset, width)


def pytest_configure(config: pytest.Config) -> None:
    """Numba runs one thread in the test process, so the kernels run as their serial twins
    (kernels.kernel_set), which compile in about half the time of the parallel kernels
    (bireal18's first forward on a fresh cache: 7.6 against 14.4 s). The parallel kernels
    are checked by the tests that ask for two threads (``two_threads``)."""
    numba.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that read a background job (tests/background.py) run last, so that their jobs
    have run alongside the other tests by then."""
    items.sort(key=lambda item: item.originalname in background.TESTS)  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the tests to run are known, start the background job of each that reads one (and
    is not skipped)."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        skipped = any(mark.args and mark.args[0] for mark in item.iter_markers("skipif"))
        if item.originalname in background.TESTS and not skipped:
            background.TESTS[item.originalname]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    background.stop_all()
