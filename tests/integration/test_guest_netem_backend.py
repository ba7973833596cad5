"""The project's own netem backend (testbed.up(..., link_backend="netem")) inside the QEMU guest.

The host kernel here has no sch_netem; the guest of vagrant/guest/ has. One
boot runs tests/guest/netem_backend.py there: h1 - h2 with delay + loss +
rate forward and delay reverse, qdisc readback with `tc qdisc show`, ping
RTTs, a live `change` of the delay that must keep loss and rate, and a
teardown that leaves nothing. The guest build (~50 s from nothing) is
cached and shared with test_guest_netem.py.
"""

import json
import subprocess
import sys


from guest_helpers import GUEST, GUEST_MARKS  # noqa: E402

pytestmark = GUEST_MARKS


def test_netem_backend_in_guest():
    build = subprocess.run([sys.executable, str(GUEST / "build.py")], capture_output=True,
                           text=True, timeout=900)
    assert build.returncode == 0, f"guest build failed:\n{build.stdout}\n{build.stderr}"
    proc = subprocess.run(
        [sys.executable, str(GUEST / "run.py"), "--no-build", "--timeout", "240", "--",
         "python3", "/project/tests/guest/netem_backend.py"],
        capture_output=True, text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("NETEM-BACKEND-RESULT ")]
    assert lines, f"no result from the guest (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert result["problems"] == [], result
    assert result["backend"] == "netem"
    assert "netem 7462: root" in result["qdisc_forward"]
    assert "tbf 7463: parent 7462:1 rate 20Mbit" in result["qdisc_forward"]
    # 30 ms + 10 ms configured; TCG timing is loose
    assert 38 <= result["rtt_median_ms"] <= 120, result["rtt_ms"]
    assert result["left_behind"] == []
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
