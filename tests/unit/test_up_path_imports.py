"""What `testbed up` imports: its start-up cost is part of every up.

pyroute2 takes 0.15-0.35 s to import, more than the realizer needs to build
a 100-router line; up and down build their netlink messages themselves
(testbed.kernel), so pyroute2 must be imported only where a link is
emulated or a qdisc read back.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
from testbed.cli import main as cli
import testbed.realize.build, testbed.instance.network
code = cli.main(["up", "--dry-run", sys.argv[1], "--set", "routers=3"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_up_does_not_import_pyroute2():
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "topologies" / "line.yaml")],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["code"] == 0
    assert "testbed.emulation.links" in result["modules"]     # the path was really taken
    assert [m for m in result["modules"] if m.split(".")[0] == "pyroute2"] == []
