"""Integration fixtures: real namespaces, and proof that a test left nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from tb_helpers import leftovers

from testbed.realize import state
from testbed.realize import build as backend
from testbed.kernel import sysctl


@pytest.fixture
def clean_instance(instance_name):
    """An instance name; after the test nothing of it may remain (then it is removed anyway)."""
    allowed_before = sysctl.read_sysctl("net.ipv4.tcp_allowed_congestion_control")
    others_before = [u for e in state.host_changes().values() for u in e.get("users", [])]
    yield instance_name
    left = leftovers(instance_name)
    if left:
        backend.teardown(instance_name, extra_namespaces=[n for n in left if "/" not in n])
    assert not left, f"the test left these behind: {left}"
    others = [u for e in state.host_changes().values() for u in e.get("users", [])]
    if not others and not others_before:
        # only meaningful when no other testbed (another test run) shares the host change
        assert sysctl.read_sysctl("net.ipv4.tcp_allowed_congestion_control") == allowed_before
    if not state.instances() and not others:
        # the last one out removes the testbed's run directory and lock file too
        assert not state.RUN_DIR.exists(), sorted(p.name for p in state.RUN_DIR.iterdir())


@pytest.fixture
def write_topology(tmp_path):
    def write(text: str, name: str = "topo.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write
