"""Integration fixtures: real namespaces, and proof that a test left nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tb_helpers import leftovers

from testbed.realize import state
from testbed.realize import build as backend
from testbed.kernel import sysctl, tracefs


def _kernel_offers_tracefs() -> bool:
    return any(line.split()[-1] == "tracefs"
               for line in Path("/proc/filesystems").read_text().splitlines() if line.strip())


def _tcp_events_usable() -> tuple[bool, str]:
    """Whether this kernel has the tcp tracepoints (mounting tracefs for a moment to look,
    as a fresh machine has it unmounted; the mount is put back as it was)."""
    if os.geteuid() != 0:
        return False, "needs root"
    if tracefs.mount_point() is not None:
        found = tracefs.probe(tracefs.TCP_EVENTS)
        return found.usable, "; ".join(found.problems)
    if not _kernel_offers_tracefs():
        return False, "this kernel has no tracefs"
    tracefs.mount()
    try:
        found = tracefs.probe(tracefs.TCP_EVENTS)
        return found.usable, "; ".join(found.problems)
    finally:
        tracefs.unmount()


@pytest.fixture(scope="session")
def tcp_events_usable():
    """Skips the test where the kernel has no tcp tracepoints (decided when a test asks,
    not at import, so that an unmounted tracefs does not skip what the kernel can do)."""
    usable, why = _tcp_events_usable()
    if not usable:
        pytest.skip(f"no tcp tracepoints here: {why}")


@pytest.fixture(scope="session")
def tracefs_root(tcp_events_usable):
    """tracefs mounted for tests that trace without a run (a run mounts it itself): mounted
    here if it was not, and unmounted at the end of the session - the host as it was."""
    root = tracefs.mount_point()
    if root is not None:
        yield root
        return
    tracefs.mount()
    root = tracefs.mount_point()
    assert root is not None
    try:
        yield root
    finally:
        if tracefs.mount_point() == root and "tracefs" not in state.host_changes():
            tracefs.unmount(root)


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
