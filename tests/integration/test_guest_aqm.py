"""The kernel AQMs (codel, fq_codel, pie, red; the drop and the ECN mark path) under the netem
backend's tbf, with real traffic, inside the QEMU guest of vagrant/guest/.

One boot runs tests/guest/aqm_backend.py there (see its docstring): for each discipline
the qdisc tree read back, a bulk CUBIC flow that moves its drop or CE-mark counters, live
changes that keep it, and a teardown that leaves nothing. About 35 s under TCG
with the guest already built (a cold build adds 50-100 s).
"""

import json
import subprocess
import sys

from guest_helpers import GUEST, GUEST_MARKS  # noqa: E402

pytestmark = GUEST_MARKS


def test_kernel_aqms_act_on_real_traffic_in_guest():
    build = subprocess.run([sys.executable, str(GUEST / "build.py")], capture_output=True,
                           text=True, timeout=900)
    assert build.returncode == 0, f"guest build failed:\n{build.stdout}\n{build.stderr}"
    proc = subprocess.run(
        [sys.executable, str(GUEST / "run.py"), "--no-build", "--timeout", "400", "--",
         "python3", "/project/tests/guest/aqm_backend.py"],
        capture_output=True, text=True, timeout=460)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("AQM-BACKEND-RESULT ")]
    assert lines, f"no result from the guest (exit {proc.returncode}):\n{proc.stdout}\n" \
        f"{proc.stderr}"
    result = json.loads(lines[-1].split(" ", 1)[1])
    assert result["problems"] == [], result["problems"]
    cases = result["cases"]
    assert sorted(cases) == ["codel", "fq_codel+ecn", "pie", "red+ecn"]
    for name, case in cases.items():
        if name.endswith("+ecn"):
            assert case["marks"] > 0 and case["drops"] <= case["marks"] / 4, (name, case)
        else:
            assert case["drops"] > 0 and case["marks"] == 0, (name, case)
    assert set(result["live"]) == {"codel target 2ms", "rate 5mbit", "red, rate 20mbit",
                                   "rate 5mbit again"}
    assert result["left_behind"] == []
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
