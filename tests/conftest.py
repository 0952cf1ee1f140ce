"""Shared fixtures (cost reports cached per model, dataset and width) and the session hooks
that start the background jobs of tests/background.py and run their tests last."""

from __future__ import annotations

from functools import cache

import pytest

from sofar_cost.costs import model_cost
from sofar_cost.tracer import CostReport

import background


@cache
def cost(name: str, dataset: str = "imagenet", width: int | None = None) -> CostReport:
    return model_cost(name, dataset, width)


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
