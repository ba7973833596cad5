"""The planner: a validated topology becomes an explicit, printable plan.

The plan names every kernel object ``up`` will make (namespaces, interfaces,
addresses, routes, sysctls, congestion control, emulated links), in order.
It is pure: ``testbed plan`` prints it and the realizer executes it without
ever looking at YAML. ``make_plan`` goes step by step: interface names,
addresses, routes (``testbed.plan.routing``), then each node's sysctls.
"""

from __future__ import annotations

import ipaddress
from typing import Iterator

from testbed.errors import ConfigError
from testbed.model.topology import Node, Topology
from testbed.plan import hoplimit, routing
from testbed.plan.types import (DEFAULT_CC, MAX_LINKS, IPAddr, IPIface, IPNet, Plan,
                                PlannedInterface, PlannedLink, PlannedNode, PlannedRoute,
                                ifindex, netns_name, owner_tag)

# (link index, side): 0 is the link's ``a`` end, 1 its ``b`` end
End = tuple[int, int]


def make_plan(topo: Topology, instance: str | None = None) -> Plan:
    """Turn a topology into a plan. Raises ConfigError for what only shows here."""
    instance = instance or topo.name
    if len(topo.links) > MAX_LINKS:
        raise ConfigError(f"{len(topo.links)} links: at most {MAX_LINKS} are supported",
                          file=topo.file, path="links")
    ifnames, addrs = interface_names(topo), addresses(topo)
    adjacency = routing.adjacency(topo)
    routing.check_reachability(topo, adjacency)
    hops, ttl = hoplimit.needed_ttl(topo, adjacency)
    notes = [hoplimit.describe(hops, ttl)] if ttl is not None else []
    notes += [n for node in topo.nodes.values()
              for n in hoplimit.too_low(node.name, dict(node.sysctls), hops)]
    wiring = routing.Wiring(topo, adjacency, ifnames, addrs)
    routes = routing.plan_routes(wiring)
    nodes = {name: _planned_node(wiring, instance, node, routes[name], ttl)
             for name, node in topo.nodes.items()}
    links = tuple(PlannedLink(index=l.index, name=l.name, a=l.a.node,
                              a_ifname=wiring.ifnames[(l.index, 0)], b=l.b.node,
                              b_ifname=wiring.ifnames[(l.index, 1)], mtu=l.mtu,
                              forward=l.forward, reverse=l.reverse) for l in topo.links)
    return Plan(instance=instance, topology=topo, nodes=nodes, links=links,
                ccs=tuple(sorted({n.cc for n in nodes.values()})), notes=tuple(notes))


def interface_names(topo: Topology) -> dict[End, str]:
    """Each link end's interface name: as written, else the node's next free ``ethN``."""
    used: dict[str, set[str]] = {n: set() for n in topo.nodes}
    for link in topo.links:
        for end in (link.a, link.b):
            if end.ifname:
                used[end.node].add(end.ifname)
    names: dict[End, str] = {}
    counters = {n: 0 for n in topo.nodes}
    for link in topo.links:
        for side, end in enumerate((link.a, link.b)):
            if end.ifname:
                names[(link.index, side)] = end.ifname
                continue
            while f"eth{counters[end.node]}" in used[end.node]:
                counters[end.node] += 1
            name = f"eth{counters[end.node]}"
            used[end.node].add(name)
            names[(link.index, side)] = name
    return names


def addresses(topo: Topology) -> dict[End, tuple[IPIface, ...]]:
    """Each link end's addresses (IPv4 first): as written, else from the pools."""
    v4 = _allocate(topo, "ipv4", topo.addressing.ipv4, topo.addressing.prefix)
    v6 = _allocate(topo, "ipv6", topo.addressing.ipv6, 64)
    return {(link.index, side): tuple(table[link.index][side] for table in (v4, v6)
                                      if link.index in table)
            for link in topo.links for side in (0, 1)}


def _allocate(topo: Topology, family: str, pool: IPNet | None,
              prefix: int) -> dict[int, tuple[IPIface, IPIface]]:
    """One address family: explicit addresses, then a free /prefix from ``pool`` per link."""
    out: dict[int, tuple[IPIface, IPIface]] = {}
    explicit = [getattr(l.a, family).network for l in topo.links if getattr(l.a, family)]
    for link in topo.links:
        ea, eb = getattr(link.a, family), getattr(link.b, family)
        if ea is not None:
            out[link.index] = (ea, eb)
    if pool is None:
        return out
    free = _subnets(pool, prefix, explicit)
    for link in topo.links:
        if link.index in out:
            continue
        net = next(free, None)
        if net is None:
            raise ConfigError(f"the {family} pool {pool} has no free /{prefix} left for "
                              f"link {link.index} ({link.name}); use a larger pool",
                              file=topo.file, path=f"addressing.{family}")
        ha, hb = _hosts_of(net)
        out[link.index] = (ipaddress.ip_interface(f"{ha}/{prefix}"),
                           ipaddress.ip_interface(f"{hb}/{prefix}"))
    return out


def _subnets(pool: IPNet, prefix: int, taken: list[IPNet]) -> Iterator[IPNet]:
    for net in pool.subnets(new_prefix=prefix):
        if not any(net.overlaps(t) for t in taken):
            yield net


def _hosts_of(net: IPNet) -> tuple[IPAddr, IPAddr]:
    if net.version == 4 and net.prefixlen == 31:
        return net[0], net[1]
    if net.version == 6 and net.prefixlen == 127:
        return net[0], net[1]
    return net[1], net[2]


def _planned_node(w: routing.Wiring, instance: str, node: Node,
                  routes: tuple[PlannedRoute, ...], ttl: int | None) -> PlannedNode:
    ifaces = tuple(PlannedInterface(
        ifname=w.ifnames[(link.index, side)], ifindex=ifindex(link.index, side),
        link=link.index, peer=peer, peer_ifname=w.ifnames[(link.index, 1 - side)],
        mtu=link.mtu, addresses=w.addresses[(link.index, side)])
        for peer, link, side in w.adjacency[node.name])
    cc = node.cc or DEFAULT_CC
    return PlannedNode(name=node.name, kind=node.kind, netns=netns_name(instance, node.name),
                       tag=owner_tag(instance, node.name), cc=cc,
                       sysctls=_sysctls(w.topo, node, ifaces, cc, ttl), interfaces=ifaces,
                       routes=routes)


def _sysctls(topo: Topology, node: Node, ifaces: tuple[PlannedInterface, ...],
             cc: str, ttl: int | None) -> tuple[tuple[str, str], ...]:
    """Forwarding for routers only, the congestion control, the TTL a long path needs
    (``hoplimit``), then the node's own sysctls (which win)."""
    forwarding = "1" if node.kind == "router" else "0"
    sysctls = [("net.ipv4.ip_forward", forwarding)]
    ipv6 = topo.addressing.ipv6 is not None or any(a.version == 6 for i in ifaces
                                                   for a in i.addresses)
    if ipv6:
        sysctls.append(("net.ipv6.conf.all.forwarding", forwarding))
    sysctls.append(("net.ipv4.tcp_congestion_control", cc))
    if ttl is not None:
        sysctls += hoplimit.ttl_sysctls(ttl, [i.ifname for i in ifaces], ipv6)
    user = dict(node.sysctls)
    if "net.ipv4.tcp_congestion_control" in user:
        raise ConfigError("set the congestion control with 'cc:', not as a sysctl",
                          file=topo.file, path=f"nodes.{node.name}.sysctls")
    return tuple([(k, v) for k, v in sysctls if k not in user] + list(user.items()))
