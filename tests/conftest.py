"""Shared fixtures: cost reports are cached per (model, dataset, width) across tests."""

from __future__ import annotations

from functools import cache

import pytest

from sofar_cost.costs import model_cost
from sofar_cost.tracer import CostReport

import background


@cache
def cost(name: str, dataset: str = "imagenet", width: int | None = None) -> CostReport:
    return model_cost(name, dataset, width)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the tests to run are known, start the x86 kernel-variant compiles if one of them
    reads them (tests/background.py): they overlap the other tests instead of holding up
    the one that reads them."""
    x86 = [item for item in session.items if item.name == "test_x86_variants_match_torch"]
    skipped = any(mark.args and mark.args[0] for item in x86
                  for mark in item.iter_markers("skipif"))
    if x86 and not skipped and not session.config.option.collectonly:
        background.start_x86_variant_checks()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    background.stop_all()
