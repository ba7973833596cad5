"""End to end as a user: `testbed run` a tiny workload (2 s flows), then
`testbed compare` (table, JSON, assertions, JUnit) and `testbed report` on
the run directory it wrote. Root: it builds real namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testbed.kernel import netns

pytestmark = pytest.mark.root

TOPO = """
name: tinyreport
defaults: {cc: cubic}
nodes:
  h1: {kind: host}
  h2: {kind: host}
  h3: {kind: host}
  h4: {kind: host}
  r1: {kind: router}
  r2: {kind: router}
links:
  - endpoints: [h1, r1]
  - endpoints: [h2, r1]
  - endpoints: [r1, r2]
    rate: 20mbit
    delay: 5ms
    queue: 1bdp
  - endpoints: [r2, h3]
  - endpoints: [r2, h4]
"""

WORKLOAD = """
name: tiny-report
topology: topo.yaml
duration: 2s
capture: {enabled: false}
flows:
  - {name: c, from: h1, to: h3, cc: cubic}
  - {name: b, from: h2, to: h4, cc: bbr}
"""


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def test_run_then_compare_and_report(tmp_path, instance_name):
    (tmp_path / "topo.yaml").write_text(TOPO)
    (tmp_path / "wl.yaml").write_text(WORKLOAD)
    run = cli("run", "wl.yaml", "--name", instance_name, "--output", "results", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert not [n for n in netns.list_names() if n.startswith(f"tb-{instance_name}-")]
    run_dir = Path(tmp_path, run.stdout.split()[-1])
    assert (run_dir / "result.json").exists()

    junit = tmp_path / "verdicts.xml"
    cmp = cli("compare", "results", "--include-suspect", "--by", "cc", "--format", "json",
              "--assert", "goodput[cc=bbr] > 1mbit", "--assert", "goodput < 20mbit",
              "--assert", "rtt_p50[cc=cubic] >= 10ms", "--junit", str(junit), cwd=tmp_path)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    data = json.loads(cmp.stdout)
    groups = {g["labels"]["cc"]: g for g in data["groups"]}
    assert set(groups) == {"bbr", "cubic"}
    for g in groups.values():
        m = g["metrics"]
        assert 0 < m["goodput"]["mean"] < 20e6           # within the bottleneck rate
        assert m["rtt_p50"]["mean"] >= 0.010             # at least the 2 x 5 ms configured
        assert 0 < m["utilisation"]["mean"] < 1
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert len(cases) == 3 and all(c.find("failure") is None for c in cases)

    failing = cli("compare", "results", "--include-suspect", "--assert", "goodput > 1gbit", cwd=tmp_path)
    assert failing.returncode == 1 and "FAIL: goodput > 1gbit" in failing.stdout

    report = cli("report", "results", "--include-suspect", "-o", "report.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert "link backend" in html and run_dir.name in html
