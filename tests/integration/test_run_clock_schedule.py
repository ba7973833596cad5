"""A run on one clock, with the workload's own link schedule, saying when a router sends
(studies-and-labs issue): real namespaces, real packets."""

import csv
import json
import os
import secrets
from pathlib import Path

import pytest

from testbed.run.workload import run_workload

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

WORKLOAD = """\
variables:
  rate: 20mbit
  delay: 5ms
  loss: 0%
---
name: clock-schedule
topology: {topo}
duration: 3s
capture: {{enabled: true}}
schedule:
  - {{at: 1s, link: r1-r2, set: {{delay: 30ms}}}}
flows:
  - {{name: bulk, from: h1, to: h3, cc: cubic}}
  - {{name: fromrouter, from: r1, to: h4, size: 20KB, driver: builtin}}
"""


def test_one_clock_the_workload_schedule_and_a_router_note(tmp_path):
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.format(topo=REPO / "topologies" / "dumbbell.yaml"))
    name = "cs" + secrets.token_hex(3)
    [run] = run_workload(wl, output=tmp_path / "res", name=name, progress=False)
    manifest = json.loads((run / "manifest.json").read_text())
    result = json.loads((run / "result.json").read_text())
    clock = manifest["clock"]
    assert clock["t0_epoch"] > 1.7e9 and clock["t0_monotonic"] > 0
    # pcap_rtt.csv on the tcp_info clock: seconds since t0, not epoch seconds
    with open(run / "pcap_rtt.csv") as f:
        ts = [float(r["t"]) for r in csv.DictReader(f)]
    assert ts and 0 <= min(ts) and max(ts) < 10
    # the workload's schedule ran, after the topology's (which has none)
    events = [e for e in manifest["link_schedule"] if not e.get("error")]
    assert events and events[0]["planned_s"] == pytest.approx(1.0)
    # a router as a flow's end is said and kept
    assert any("r1 is a router" in n for n in result["summary"]["notes"])
