"""``testbed run --kernel``: a flagship point in a real guest kernel, and a hung guest.

The guest kernel is Debian's 6.1 series, built once into the kernel cache
(/var/cache/testbed/kernels, or $TESTBED_KERNEL_CACHE) by ``testbed kernels fetch 6.1``
(~2 min from nothing, reused by every later test and run). Runs under TCG (--accel tcg:
KVM does not boot a stock kernel on our CI machines), so rates are kept low.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from guest_helpers import GUEST_MARKS  # noqa: E402

pytestmark = GUEST_MARKS
REPO = Path(__file__).resolve().parents[2]
FLAGSHIP = str(REPO / "workloads/cubic-vs-bbr.yaml")


def _testbed(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def kernel_61() -> str:
    proc = _testbed("kernels", "fetch", "6.1", timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    return proc.stdout.split(":")[0]          # 6.1.0-NN-generic


def _qemus_using(directory: Path) -> list[int]:
    """QEMU processes whose command line names ``directory`` (their shares are in it)."""
    return [p.pid for p in psutil.process_iter(["name", "cmdline"])
            if (p.info["name"] or "").startswith("qemu")
            and str(directory) in " ".join(p.info["cmdline"] or [])]


def test_a_flagship_point_runs_in_the_guest_kernel_on_netem(kernel_61, tmp_path):
    proc = _testbed("run", FLAGSHIP, "--kernel", "6.1", "--accel", "tcg",
                    "--set", "mix=bbr-alone", "--set", "rate=5mbit", "--set", "duration=3s",
                    "--output", str(tmp_path), timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    (run_dir,) = [Path(line) for line in proc.stdout.splitlines()]
    assert run_dir.parent.parent == tmp_path
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["kernel"]["release"].startswith("6.1.0-"), manifest["kernel"]
    assert manifest["kernel"]["release"] != os.uname().release
    assert (manifest["kernel"]["flavour"], manifest["kernel"]["mode"]) == ("generic", "tcg")
    assert len(manifest["kernel"]["config_hash"]) == 16
    assert manifest["testbed"]["link_backend"] == "netem"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete", result.get("error")
    (flow,) = result["flows"]
    assert flow["name"] == "bbr"
    guest = json.loads((run_dir / "guest.json").read_text())
    assert guest["kernel"] == kernel_61 and guest["accel"] == "tcg"


def test_a_guest_that_does_not_finish_is_killed_at_its_timeout(kernel_61, tmp_path):
    private_tmp = tmp_path / "tmp"           # the guest's temporary directories go here
    private_tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "testbed", "run", FLAGSHIP, "--kernel", "6.1", "--accel", "tcg",
         "--guest-timeout", "20", "--set", "mix=bbr-alone", "--set", "duration=300s",
         "--output", str(tmp_path / "results")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "TMPDIR": str(private_tmp)})
    assert proc.returncode != 0
    assert "did not finish in 20 s; killed" in proc.stderr, proc.stderr
    assert "1 kernel(s) failed" in proc.stderr
    assert _qemus_using(private_tmp) == []
    assert list(private_tmp.iterdir()) == []
    for run_dir in tmp_path.glob("results/*/*"):   # what the killed guest wrote came home, marked
        assert json.loads((run_dir / "guest.json").read_text())["timed_out"] is True


def test_a_kernel_that_does_not_exist_is_named_with_those_that_do(tmp_path):
    proc = _testbed("run", FLAGSHIP, "--kernel", "5.4", "--output", str(tmp_path), timeout=120)
    assert proc.returncode == 2
    assert "--kernel 5.4: no such kernel; available: host, 6.1" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
