"""Shared pytest setup: the root marker and per-test instance names."""

from __future__ import annotations

import itertools
import os

import pytest

_counter = itertools.count()


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: builds real network namespaces")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def instance_name() -> str:
    """A testbed instance name no other test (or process) uses."""
    return f"t{os.getpid() % 100000}x{next(_counter)}"
