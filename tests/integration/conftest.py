"""Integration fixtures: real namespaces, and proof that a test left nothing behind."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tb_helpers import leftovers

from testbed.realize import state
from testbed.realize import build as backend
from testbed.kernel import sysctl, tracefs


def _kernel_has_tcp_tracepoints() -> tuple[bool, str]:
    """Whether this kernel has tracefs and the tcp tracepoints, seen without mounting
    anything (/proc/filesystems, and the tracepoints' symbols in /proc/kallsyms)."""
    if os.geteuid() != 0:
        return False, "needs root"
    if "tracefs" not in Path("/proc/filesystems").read_text().split():
        return False, "this kernel has no tracefs"
    symbols = set(re.findall(r" __traceiter_(\w+)$", Path("/proc/kallsyms").read_text(), re.M))
    found = [e for e in tracefs.TCP_EVENTS if e.split("/")[1] in symbols]
    if not found:
        return False, "this kernel has no tcp tracepoints"
    return True, ""


@pytest.fixture(scope="session")
def tcp_events_usable():
    """Skips the test where the kernel has no tcp tracepoints (decided when a test asks,
    not at import and not by the mount: a fresh machine has tracefs unmounted)."""
    usable, why = _kernel_has_tcp_tracepoints()
    if not usable:
        pytest.skip(f"no tcp tracepoints here: {why}")


@pytest.fixture(scope="session")
def tracefs_root(tcp_events_usable):
    """tracefs for tests that trace without a run, mounted as a run mounts it: for an
    instance of the session's own (a state directory), recorded in host.json, so that a
    run beside it shares the mount and the last one out unmounts it."""
    name = f"tev{os.getpid()}"
    state.instance_dir(name).mkdir(parents=True)
    try:
        state.mount_tracefs(name)
        root = tracefs.mount_point()
        assert root is not None
        yield root
    finally:
        state.instance_dir(name).rmdir()
        state.release_tracefs(name)
        state.tidy()


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
