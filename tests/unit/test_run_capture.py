"""capture.interfaces, parsed once (run/capture.py) on the planned topology: what
each form names, and the problems preflight reports. No root."""

from __future__ import annotations

from pathlib import Path

from testbed.instance.network import load_topology
from testbed.run.capture import capture_points
from testbed.run.preflight import planned

DUMBBELL = Path(__file__).resolve().parents[2] / "topologies" / "dumbbell.yaml"


def test_each_form_names_its_interfaces_and_bad_ones_are_reported_by_index():
    net = planned(load_topology(DUMBBELL, {"rate": "10mbit"}), "cap")
    link = next(l for l in net.links if {l.a, l.b} == {"r1", "r2"})
    bottleneck, problems = capture_points(["bottleneck"], net)
    assert problems == [] and bottleneck == [(link.a, link.a_ifname)]
    r1_end = link.a_ifname if link.a == "r1" else link.b_ifname
    points, problems = capture_points(["r2-r1", "h1", f"r1:{r1_end}", "h1:nope", "h1-h4", "zz"],
                                      net)
    assert points[0] == ("r2", link.b_ifname if link.b == "r2" else link.a_ifname)
    assert [n for n, _ in points[1:]] == ["h1"] * len(net.nodes["h1"].interfaces) + ["r1"]
    assert [i for i, _ in problems] == [3, 4, 5]
    assert "h1 has" in problems[0][1] and "no link between h1 and h4" in problems[1][1]
    assert "write 'bottleneck'" in problems[2][1]
