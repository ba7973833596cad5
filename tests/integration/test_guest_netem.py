"""The real sch_netem, exercised inside the QEMU guest of vagrant/guest/.

The host kernel here has no netem; the guest (a stock Debian kernel under
TCG) does. Building the guest from nothing takes about a minute (cached in
vagrant/guest/cache/ or $TESTBED_GUEST_CACHE), one boot about 10-15 s.
"""

import json
import subprocess
import sys

import pytest

from guest_helpers import GUEST, GUEST_MARKS  # noqa: E402

pytestmark = GUEST_MARKS


@pytest.fixture(scope="module")
def guest_built():
    proc = subprocess.run([sys.executable, str(GUEST / "build.py")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"guest build failed:\n{proc.stdout}\n{proc.stderr}"


def _run_guest(*command, timeout=300):
    proc = subprocess.run(
        [sys.executable, str(GUEST / "run.py"), "--no-build", "--timeout", str(timeout), "--", *command],
        capture_output=True, text=True, timeout=timeout + 60,
    )
    return proc


def test_netem_delay_in_guest(guest_built):
    proc = _run_guest("python3", "/project/vagrant/guest/selftest.py", "--delay-ms", "50")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("SELFTEST-RESULT ")]
    assert lines, f"no result from the guest (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert "netem" in result["qdisc"] and "delay 50ms" in result["qdisc"], result["qdisc"]
    # TCG timing is loose: 50 ms of netem on one side gave 51 ms here.
    assert 45 <= result["rtt_median_ms"] <= 150, result
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"


def test_exit_code_and_project_share(guest_built):
    # The project is at /project, the host venv importable, and the exit code comes back out.
    script = "import pathlib, sys, yaml; assert pathlib.Path('/project/pyproject.toml').exists(); sys.exit(7)"
    proc = _run_guest("python3", "-c", script)
    assert proc.returncode == 7, f"{proc.stdout}\n{proc.stderr}"
