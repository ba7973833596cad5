"""Naming links of a running testbed: a-b, b-a, and which direction is forward."""

import pytest

from testbed.emulation import links, live
from testbed.errors import ConfigError, TestbedError
from testbed.model.document import load_text
from testbed.model.topology import parse_topology
from testbed.plan.deployed import Deployed
from testbed.plan.planner import make_plan

TOPO = """
name: x
nodes: {r1: {kind: router}, r2: {kind: router}}
links:
  - endpoints: [r1, r2]
    forward: {delay: 5ms}
"""


def deployed() -> Deployed:
    plan = make_plan(parse_topology(load_text(TOPO, "t.yaml")), "x")
    emulated = tuple(links.emulated("netem", d, plan.nodes) for d in links.directions(plan))
    return Deployed.of(plan, cc_in_force={}, host_changes=(), link_backend="netem",
                       link_backend_reason="test", emulated=emulated, notes=())


def test_forward_is_the_direction_as_named():
    (d,) = live.directions(deployed(), "r1-r2", "forward")
    assert (d.label, d.side, d.ifname) == ("r1->r2", "forward", "eth0")
    (d,) = live.directions(deployed(), "r2-r1", "forward")
    assert (d.label, d.side, d.ifname) == ("r2->r1", "reverse", "eth0")
    assert deployed().emulation(live.directions(deployed(), "r1-r2")[0]).netns == "tb-x-r1"
    assert [d.label for d in live.directions(deployed(), "r2-r1")] == ["r2->r1", "r1->r2"]


def test_emulated_and_unknown():
    fwd, rev = live.directions(deployed(), "r1-r2")
    assert live.is_emulated(deployed(), fwd) and not live.is_emulated(deployed(), rev)
    with pytest.raises(TestbedError, match="no link 'r1-r3'.*links: r1-r2"):
        live.directions(deployed(), "r1-r3")
    with pytest.raises(TestbedError, match="direction"):
        live.directions(deployed(), "r1-r2", "up")


def test_settings_parse_strictly():
    imp = live.parse_settings(["delay=50ms", "loss=1%"])
    assert imp.delay.seconds == 0.05 and imp.loss.fraction == 0.01 and imp.rate is None
    with pytest.raises(ConfigError, match="unknown impairment"):
        live.parse_settings(["delya=1ms"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        live.parse_settings(["delay"])
    with pytest.raises(ConfigError):
        live.parse_settings(["loss=120%"])
