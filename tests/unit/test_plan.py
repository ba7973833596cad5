"""The planner: addresses, interface names, and routes that really deliver.

Routes are checked by simulating forwarding hop by hop (longest prefix
match, hosts never forward) between every pair of hosts.
"""

from pathlib import Path

import pytest

from testbed.model.document import load_text
from testbed.model.topology import parse_topology
from testbed.instance.network import load_topology
from testbed.plan.planner import make_plan
from testbed.plan.types import Plan

TOPOLOGIES = Path(__file__).parents[2] / "topologies"


def plan_of(text: str, instance: str | None = None) -> Plan:
    return make_plan(parse_topology(load_text(text, "t.yaml")), instance)


def owner_of(plan: Plan) -> dict:
    return {a.ip: name for name, n in plan.nodes.items() for i in n.interfaces for a in i.addresses}


def forward(plan: Plan, src: str, dst_ip) -> list[str]:
    """The nodes a packet visits from ``src`` to ``dst_ip``; raises if it cannot arrive."""
    owners = owner_of(plan)
    max_hops = len(plan.nodes) + 1
    node, path = src, [src]
    for _ in range(max_hops):
        if owners.get(dst_ip) == node:
            return path
        here = plan.nodes[node]
        if node != src and here.kind != "router":
            raise AssertionError(f"host {node} would have to forward ({path})")
        candidates = []
        for iface in here.interfaces:
            for addr in iface.addresses:
                if addr.version == dst_ip.version and dst_ip in addr.network:
                    candidates.append((addr.network.prefixlen, dst_ip, iface.ifname))
        for route in here.routes:
            if route.dst.version == dst_ip.version and dst_ip in route.dst:
                candidates.append((route.dst.prefixlen, route.gateway, route.ifname))
        if not candidates:
            raise AssertionError(f"{node} has no route to {dst_ip} ({path})")
        _, next_ip, ifname = max(candidates, key=lambda c: c[0])
        peer = next(i.peer for i in here.interfaces if i.ifname == ifname)
        # a gateway (or the destination itself) must sit on the link's other end
        assert owners.get(next_ip) == peer, f"{node}: {next_ip} is not on {ifname}'s peer"
        node = peer
        path.append(node)
    raise AssertionError(f"loop: {path}")


def assert_all_hosts_reach_each_other(plan: Plan) -> None:
    hosts = [n for n in plan.nodes.values() if n.kind == "host"]
    for a in hosts:
        for b in hosts:
            if a is b:
                continue
            for addr in (ad for i in b.interfaces for ad in i.addresses):
                path = forward(plan, a.name, addr.ip)
                assert path[-1] == b.name


@pytest.mark.parametrize("name,variables", [
    ("dumbbell.yaml", {}), ("line.yaml", {"routers": 10}), ("parking-lot.yaml", {}),
    ("star.yaml", {"hosts": 12})])
def test_example_topologies_route_every_host_to_every_host(name, variables):
    plan = make_plan(load_topology(TOPOLOGIES / name, variables))
    assert_all_hosts_reach_each_other(plan)


def test_dumbbell_addresses_are_unique_slash30_per_link():
    plan = make_plan(load_topology(TOPOLOGIES / "dumbbell.yaml"))
    nets = set()
    for link in plan.links:
        a = next(i for i in plan.nodes[link.a].interfaces if i.link == link.index)
        b = next(i for i in plan.nodes[link.b].interfaces if i.link == link.index)
        assert a.addresses[0].network == b.addresses[0].network
        assert a.addresses[0].network.prefixlen == 30
        assert a.addresses[0].ip != b.addresses[0].ip
        nets.add(a.addresses[0].network)
    assert len(nets) == len(plan.links)


MESH = """
name: mesh
addressing: {ipv6: "fd00:1::/48", prefix: 31}
nodes:
  h1: {}
  h2: {}
  h3: {}
  r1: {kind: router}
  r2: {kind: router}
  r3: {kind: router}
  r4: {kind: router}
links:
  - endpoints: [h1, r1]
  - endpoints: [r1, r2]
  - endpoints: [r2, r3]
  - endpoints: [r3, r4]
  - endpoints: [r4, r1]
  - endpoints: [r3, h2]
  - endpoints: [h3, r2]
  - endpoints: [h3, r4]      # h3 is multi-homed
"""


def test_ring_with_multihomed_host_ipv4_and_ipv6():
    plan = plan_of(MESH)
    assert_all_hosts_reach_each_other(plan)
    h1 = plan.nodes["h1"]
    assert {a.version for a in h1.interfaces[0].addresses} == {4, 6}
    assert h1.interfaces[0].addresses[0].network.prefixlen == 31
    # h1 has a single uplink: default routes for both families
    assert {str(r.dst) for r in h1.routes} == {"0.0.0.0/0", "::/0"}


def test_shortest_path_is_taken():
    plan = plan_of(MESH)
    h2 = plan.nodes["h2"]
    target = h2.interfaces[0].addresses[0].ip
    # r1 reaches r3 in two hops either way; h1 -> h2 must take 4 hops at most
    assert len(forward(plan, "h1", target)) == 5


def test_routing_hosts_scope_leaves_transfer_nets_to_neighbours():
    plan = plan_of(MESH)
    r2_r3 = next(l for l in plan.links if {l.a, l.b} == {"r2", "r3"})
    net = next(i for i in plan.nodes["r2"].interfaces if i.link == r2_r3.index).addresses[0].network
    assert all(r.dst != net for r in plan.nodes["r4"].routes)
    plan_all = plan_of(MESH.replace("prefix: 31}", "prefix: 31, routing: all}"))
    assert any(r.dst == net for r in plan_all.nodes["r4"].routes)


def test_explicit_route_overrides_auto():
    text = MESH.replace("  r1: {kind: router}",
                        "  r1: {kind: router, routes: [{to: 10.0.0.0/16, via: r4}]}")
    plan = plan_of(text)
    route = next(r for r in plan.nodes["r1"].routes if str(r.dst) == "10.0.0.0/16")
    assert route.origin == "explicit"
    r4_ips = {a.ip for i in plan.nodes["r4"].interfaces for a in i.addresses}
    assert route.gateway in r4_ips


def test_interface_names_skip_explicit_ones_and_instance_names_namespaces():
    text = """
name: t
nodes: {h1: {}, r1: {kind: router}, h2: {}}
links:
  - endpoints: [h1, {node: r1, ifname: eth1}]
  - endpoints: [h2, r1]
"""
    plan = plan_of(text, instance="other")
    assert [i.ifname for i in plan.nodes["r1"].interfaces] == ["eth1", "eth0"]
    assert plan.nodes["r1"].netns == "tb-other-r1"
    assert plan.nodes["r1"].tag == "testbed.other.r1"
    indexes = [i.ifindex for n in plan.nodes.values() for i in n.interfaces]
    assert len(set(indexes)) == len(indexes) and min(indexes) > 1000


def test_explicit_addresses_are_kept_and_pool_skips_them():
    text = """
name: t
nodes: {h1: {}, r1: {kind: router}, h2: {}}
links:
  - endpoints: [{node: h1, ipv4: 10.0.0.1/30}, {node: r1, ipv4: 10.0.0.2/30}]
  - endpoints: [h2, r1]
"""
    plan = plan_of(text)
    assert str(plan.nodes["h1"].interfaces[0].addresses[0]) == "10.0.0.1/30"
    assert str(plan.nodes["h2"].interfaces[0].addresses[0]) == "10.0.0.5/30"


def test_cc_and_forwarding_sysctls():
    text = """
name: t
defaults: {cc: bbr}
nodes: {h1: {cc: reno}, r1: {kind: router}, h2: {sysctls: {net.ipv4.tcp_ecn: 1}}}
links:
  - endpoints: [h1, r1]
  - endpoints: [h2, r1]
"""
    plan = plan_of(text)
    assert plan.nodes["h1"].cc == "reno" and plan.nodes["h2"].cc == "bbr"
    assert dict(plan.nodes["r1"].sysctls)["net.ipv4.ip_forward"] == "1"
    assert dict(plan.nodes["h2"].sysctls)["net.ipv4.ip_forward"] == "0"
    assert dict(plan.nodes["h2"].sysctls)["net.ipv4.tcp_ecn"] == "1"
    assert plan.ccs == ("bbr", "reno")


def test_hosts_file_names_every_node():
    plan = make_plan(load_topology(TOPOLOGIES / "dumbbell.yaml"))
    hosts = plan.hosts_file()
    for name, node in plan.nodes.items():
        assert f"{node.ipv4}\t{name}" in hosts


def test_line_of_1000_routers_plans_quickly_with_few_routes():
    plan = make_plan(load_topology(TOPOLOGIES / "line.yaml", {"routers": 1000}))
    assert len(plan.nodes) == 1002
    # hosts scope: each router needs at most two routes (one per end host)
    assert max(len(n.routes) for n in plan.nodes.values()) <= 2
    assert_all_hosts_reach_each_other(plan)
