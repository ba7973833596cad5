"""Helpers for integration tests: run the CLI, wait, and list what an instance left."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from testbed.realize import state
from testbed.kernel import netns

# Tests that judge measured time or rate (delay accuracy, jitter spread, tbf rate, validate's
# tolerances) get one rerun (pytest-rerunfailures): on a shared 2-core CI host a noisy
# neighbour can starve the delay daemon or a probe for a while (seen: 49 of 500 probes late
# in one run, none in the next three). An emulator that is really wrong fails both runs.
TIMING = pytest.mark.flaky(reruns=1, reruns_delay=5)


def leftovers(instance: str) -> list[str]:
    found = [n for n in netns.list_names() if n.startswith(f"tb-{instance}-")]
    if state.instance_dir(instance).exists():
        found.append(str(state.instance_dir(instance)))
    return found


def run_cli(*args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI as a user would: a separate process."""
    proc = subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"testbed {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


