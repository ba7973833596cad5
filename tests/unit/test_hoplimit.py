"""Hosts more than 64 links apart: the plan raises every node's TTL and hop limit."""

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.model.document import load_text
from testbed.model.topology import parse_topology
from testbed.instance.network import load_topology
from testbed.plan.planner import make_plan

LINE = Path(__file__).parents[2] / "topologies" / "line.yaml"
TTL_KEYS = ("net.ipv4.ip_default_ttl", "net.ipv6.conf.all.hop_limit",
            "net.ipv6.conf.default.hop_limit")


def _line(routers: int, extra: str = "") -> str:
    """h1 - r1 - ... - rN - h2 with IPv6, ``extra`` added to r1's settings."""
    nodes = "".join(f"  r{i}: {{kind: router}}\n" for i in range(2, routers + 1))
    links = "".join(f"  - endpoints: [r{i}, r{i + 1}]\n" for i in range(1, routers))
    return (f"name: t\naddressing: {{ipv6: 'fd00::/48'}}\nnodes:\n  h1: {{}}\n  h2: {{}}\n"
            f"  r1: {{kind: router{extra}}}\n{nodes}links:\n  - endpoints: [h1, r1]\n{links}"
            f"  - endpoints: [r{routers}, h2]\n")


def _sysctls(plan, node: str) -> dict[str, str]:
    return dict(plan.nodes[node].sysctls)


def test_short_paths_keep_the_kernel_default():
    plan = make_plan(load_topology(LINE, {"routers": 50}))     # 51 links: 64 is enough
    assert not any(key in _sysctls(plan, n) for n in plan.nodes for key in TTL_KEYS)
    assert plan.notes == ()


def test_a_line_of_100_routers_raises_every_ttl_and_says_so():
    plan = make_plan(parse_topology(load_text(_line(100), "t.yaml")))
    for name, node in plan.nodes.items():
        sysctls = dict(node.sysctls)
        assert all(sysctls[key] == "109" for key in TTL_KEYS), name   # 101 links + 8
        for iface in node.interfaces:       # IPv6 takes the hop limit of the interface
            assert sysctls[f"net.ipv6.conf.{iface.ifname}.hop_limit"] == "109"
    assert plan.notes == ("the longest path crosses 101 links, near or over the default TTL "
                          "of 64: every node sends with TTL and hop limit 109 (8 to spare)",)
    assert "note: the longest path crosses 101 links" in plan.render()


def test_ttl_stops_at_255_and_a_longer_path_is_said():
    plan = make_plan(load_topology(LINE, {"routers": 250}))    # 251 links
    assert _sysctls(plan, "h1")["net.ipv4.ip_default_ttl"] == "255"
    longer = make_plan(load_topology(LINE, {"routers": 255}))  # a benchmark of up: allowed
    assert _sysctls(longer, "h1")["net.ipv4.ip_default_ttl"] == "255"
    assert any("crosses 256 links; a packet crosses at most 255" in n and "never reach" in n
               for n in longer.notes)


def test_a_ttl_the_topology_sets_wins_and_one_too_low_is_reported():
    text = _line(100, ", sysctls: {net.ipv4.ip_default_ttl: 80}")
    plan = make_plan(parse_topology(load_text(text, "t.yaml")))
    assert _sysctls(plan, "r1")["net.ipv4.ip_default_ttl"] == "80"
    assert _sysctls(plan, "r2")["net.ipv4.ip_default_ttl"] == "109"
    assert ("node r1: net.ipv4.ip_default_ttl=80 (set in the topology) is below the 101 links "
            "of the longest path: its packets can die on the way") in plan.notes


def _brute_force_longest(topo) -> int:
    """The longest shortest path, by a search from every node (hosts do not forward)."""
    adjacency = {n: [] for n in topo.nodes}
    for link in topo.links:
        adjacency[link.a.node].append(link.b.node)
        adjacency[link.b.node].append(link.a.node)
    longest = 0
    for source in topo.nodes:
        depth, frontier = {source: 0}, [source]
        while frontier:
            nxt = []
            for node in frontier:
                if node == source or topo.nodes[node].kind == "router":
                    for peer in adjacency[node]:
                        if peer not in depth:
                            depth[peer] = depth[node] + 1
                            nxt.append(peer)
            frontier = nxt
        longest = max(longest, *depth.values())
    return longest


RING = ("name: ring\nnodes: {h1: {}, h2: {}, h3: {}, " +
        ", ".join(f"r{i}: {{kind: router}}" for i in range(1, 9)) + "}\nlinks:\n" +
        "".join(f"  - endpoints: [r{i}, r{i % 8 + 1}]\n" for i in range(1, 9)) +
        "  - endpoints: [h1, r1]\n  - endpoints: [h2, r4]\n  - endpoints: [h3, r6]\n")


@pytest.mark.parametrize("topo", [
    *[load_topology(p) for p in sorted(LINE.parent.glob("*.yaml"))],
    load_topology(LINE, {"routers": 7}),
    parse_topology(load_text(RING, "ring.yaml")),
], ids=lambda t: t.file)
def test_longest_path_is_the_longest_shortest_path(topo):
    from testbed.plan.hoplimit import longest_path
    adjacency = {n: [] for n in topo.nodes}
    for link in topo.links:
        adjacency[link.a.node].append((link.b.node, link, 0))
        adjacency[link.b.node].append((link.a.node, link, 1))
    assert longest_path(topo, adjacency) == _brute_force_longest(topo)
