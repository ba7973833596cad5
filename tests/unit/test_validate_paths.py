"""Which traffic validate sends through a router's direction (pure: planned state only)."""

from pathlib import Path

from testbed.instance.network import load_topology
from testbed.plan.planner import make_plan
from testbed.instance.paths import forwarding_path, next_hop, node_of, rate_path

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def planned(path=TOPOLOGIES / "dumbbell.yaml"):
    """The planned nodes and links of a topology and each hop's impairment, as validate
    sees them."""
    plan = make_plan(load_topology(path, {}), "vp")
    links = {l.index: l for l in plan.links}

    def impairment_of(node, index, peer):
        link = links[index]
        imp = link.forward if (link.a, link.b) == (node, peer) else link.reverse
        return None if imp.is_empty else imp
    return plan, impairment_of


def test_paths_follow_the_planned_routes():
    plan, _ = planned()
    nodes = plan.nodes
    addr = plan.nodes["h3"].ipv4
    assert node_of(nodes, addr) == "h3"
    hops = forwarding_path(nodes, "h1", addr)
    assert [(a, b) for a, _, b in hops] == [("h1", "r1"), ("r1", "r2"), ("r2", "h3")]
    assert next_hop(nodes, "r2", addr)[1] == "h3"
    assert next_hop(nodes, "h1", addr)[1] == "r1"          # by the default route


def test_a_routers_direction_is_measured_between_hosts_on_a_clean_path():
    plan, impairment_of = planned()
    fwd, rev = link_of(plan, "r1-r2").directions
    src, dst = rate_path(plan.nodes, fwd, impairment_of)
    assert src in ("h1", "h2") and node_of(plan.nodes, dst) in ("h3", "h4")
    src, dst = rate_path(plan.nodes, rev, impairment_of)
    assert src in ("h3", "h4") and node_of(plan.nodes, dst) in ("h1", "h2")


def link_of(plan, name):
    return next(l for l in plan.links if l.name == name)


def test_no_host_path_when_every_other_hop_would_lower_the_rate(tmp_path):
    text = (TOPOLOGIES / "dumbbell.yaml").read_text()
    lossy = text.replace("  - endpoints: [h1, r1]\n", "  - endpoints: [h1, r1]\n    loss: 1%\n")
    lossy = lossy.replace("  - endpoints: [h2, r1]\n", "  - endpoints: [h2, r1]\n    rate: 10mbit\n")
    path = tmp_path / "d.yaml"
    path.write_text(lossy)
    plan, impairment_of = planned(path)
    for d in link_of(plan, "r1-r2").directions:  # via h1: lossy both ways; via h2: slower
        assert rate_path(plan.nodes, d, impairment_of) is None, d.label
    clean = tmp_path / "c.yaml"
    clean.write_text(lossy.replace("    rate: 10mbit\n", "    rate: 1gbit\n"))
    plan, impairment_of = planned(clean)
    for d in link_of(plan, "r1-r2").directions:  # h2's faster link does not lower the rate
        assert rate_path(plan.nodes, d, impairment_of) is not None, d.label
