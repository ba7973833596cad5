"""testbed's RED options are what the ``tc`` installed here sends, byte for byte.

tests/unit/test_red.py compares against bytes captured once from tc 6.1.0
(tests/data/red_tc_options.json); this test captures them again from the tc
on this machine, so a stale fixture or another tc's arithmetic shows up.
This kernel may lack sch_red: tc's request is refused, but strace has seen
the bytes it sent. It runs in a throwaway network namespace (``unshare -n``).

Regenerate the fixture (as root):
    PYTHONPATH=$PWD python tests/integration/test_red_matches_tc.py > tests/data/red_tc_options.json
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "red_tc_options.json"
OPTIONS = re.compile(r'nla_type=TCA_OPTIONS\}, "((?:\\x[0-9a-f]{2})+)"')


def tc_red_options(args: list[str]) -> bytes:
    """TCA_OPTIONS of ``tc qdisc add dev lo root handle 7466: <args>``, as tc sent it."""
    argv = ["unshare", "-n", "strace", "-e", "trace=sendmsg", "-xx", "-s", "4096",
            "tc", "qdisc", "add", "dev", "lo", "root", "handle", "7466:", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    found = OPTIONS.findall(proc.stderr)
    assert found, f"no TCA_OPTIONS in strace's output of {argv}:\n{proc.stderr}"
    return bytes.fromhex(found[-1].replace("\\x", ""))


def tc_version() -> str:
    return subprocess.run(["tc", "-V"], capture_output=True, text=True).stdout.strip()


@pytest.mark.root
@pytest.mark.skipif(not (shutil.which("strace") and shutil.which("tc")
                         and shutil.which("unshare")), reason="needs strace, tc, unshare")
def test_red_options_are_what_this_tc_sends():
    from testbed.kernel import red
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    for case in json.loads(FIXTURE.read_text())["cases"]:
        p = red.RedParams(**case["params"])
        assert red.options(p, tick_in_usec) == tc_red_options(p.tc_args()), \
            (tc_version(), p.tc_args())


def capture_fixture() -> dict:
    """Every case of the fixture, recaptured from this machine's tc."""
    from testbed.kernel import red
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    cases = []
    for case in json.loads(FIXTURE.read_text())["cases"]:
        p = red.RedParams(**case["params"])
        cases.append({"params": case["params"], "tc_args": p.tc_args(),
                      "options_hex": tc_red_options(p.tc_args()).hex()})
    return {"tc": tc_version(), "tick_in_usec": tick_in_usec, "cases": cases}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(capture_fixture(), indent=1))
