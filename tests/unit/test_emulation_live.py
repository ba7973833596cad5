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


def test_link_set_takes_an_aqm_with_its_parameters():
    """`link set r1-r2 aqm='{kind: codel, target: 2ms}'`: the error named this mapping form,
    which no syntax reached (a new user tried five)."""
    from testbed.model.impairment import Aqm
    from testbed.units import Duration
    imp = live.parse_settings(["aqm={kind: codel, target: 2ms, interval: 50ms}"])
    assert imp.aqm == Aqm("codel", target=Duration(0.002), interval=Duration(0.05))
    with pytest.raises(ConfigError, match="red takes no target"):
        live.parse_settings(["aqm={kind: red, target: 2ms}"])
    with pytest.raises(ConfigError, match="aqm:"):
        live.parse_settings(["aqm={kind: codel, target: [}"])
    with pytest.raises(ConfigError, match="did you mean 'fq_codel'"):
        live.parse_settings(["aqm=fq-codel"])


RATED = """
name: x
nodes: {r1: {kind: router}, r2: {kind: router}}
links:
  - endpoints: [r1, r2]
    forward: {rate: 10mbit, aqm: codel, ecn: true}
"""


def _after(topology: str, *settings: str, side: int = 0):
    plan = make_plan(parse_topology(load_text(topology, "t.yaml")), "x")
    dirs = list(links.directions(plan))
    before = {d.side: d.impairment for d in dirs}
    from testbed.emulation import BACKENDS
    return live._after(BACKENDS["netem"](), before,
                       [(dirs[side], live.parse_settings(list(settings)), False)])


def test_a_live_change_is_held_to_the_files_rules():
    """`link set` merged into what is in force must still make sense: an AQM without a rate
    (nothing queues) and ECN on a fifo were accepted live and shown as in force."""
    with pytest.raises(ConfigError, match="aqm codel manages the bottleneck queue"):
        _after(TOPO, "aqm=codel")
    with pytest.raises(ConfigError, match="ecn: true needs an AQM that marks"):
        _after(RATED, "aqm=fifo")
    after = _after(RATED, "aqm=fifo", "ecn=false")
    assert after["forward"].aqm.kind == "fifo" and after["forward"].ecn is False


def test_plan_shows_a_hosts_delay_line_where_up_puts_it():
    """A host's traffic to a router is delayed at the router's ingress (userspace backend);
    `plan` showed the host's egress (POSTROUTING) while `up` did PREROUTING at the router."""
    text = """
name: x
nodes: {h1: {kind: host}, r1: {kind: router}}
links:
  - {endpoints: [h1, r1], delay: 5ms}
"""
    plan = make_plan(parse_topology(load_text(text, "t.yaml")), "x")
    selection = links.choose(plan, "userspace")
    steps = [s for s in links.steps(plan, selection) if "iptables" in s]
    assert any(s.startswith("h1->r1: tb-x-r1/eth0: iptables: mangle PREROUTING -i eth0")
               for s in steps), steps
    assert any(s.startswith("r1->h1: tb-x-r1/eth0: iptables: mangle POSTROUTING -o eth0")
               for s in steps), steps
