"""Routes of a plan: which node forwards what, over which interface, to which gateway.

Hosts with a single link to a router get a default route; every other node
gets a route per subnet it is not on, found by a breadth-first search from
the subnet's router end(s) through routers only (hosts never forward).
Explicit ``routes:`` of a node override both. ``routing: hosts`` plans
routes only to subnets that have a host on them.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass
from typing import Any

from testbed.errors import ConfigError
from testbed.model.topology import Link, Route, Topology
from testbed.plan.types import IPAddr, IPIface, IPNet, PlannedRoute

# node -> [(neighbour, link, our side of the link)], in link order
Adjacency = dict[str, list[tuple[str, Link, int]]]
DEFAULTS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def adjacency(topo: Topology) -> Adjacency:
    out: Adjacency = {n: [] for n in topo.nodes}
    for link in topo.links:
        out[link.a.node].append((link.b.node, link, 0))
        out[link.b.node].append((link.a.node, link, 1))
    return out


@dataclass(frozen=True)
class Wiring:
    """What routing needs of a plan in the making: who is linked to whom, and by
    which interface names and addresses (keyed by link index and side, 0 = a)."""

    topo: Topology
    adjacency: Adjacency
    ifnames: dict[tuple[int, int], str]
    addresses: dict[tuple[int, int], tuple[IPIface, ...]]

    def gateway(self, node: str, neighbour: str, family: int) -> tuple[IPAddr, str] | None:
        """The neighbour's address on the first link between them, and our ifname there."""
        for peer, link, side in self.adjacency[node]:
            if peer != neighbour:
                continue
            for addr in self.addresses[(link.index, 1 - side)]:
                if addr.version == family:
                    return addr.ip, self.ifnames[(link.index, side)]
        return None


def plan_routes(w: Wiring) -> dict[str, tuple[PlannedRoute, ...]]:
    """Every node's routes, sorted (IPv4 first, default last)."""
    routes: dict[str, dict[IPNet, PlannedRoute]] = {n: {} for n in w.topo.nodes}
    default_hosts = _default_routes(w, routes)
    _subnet_routes(w, routes, default_hosts)
    for name, node in w.topo.nodes.items():
        for route in node.routes:
            routes[name][route.to] = _resolve_explicit(w, name, route)
    return {name: tuple(sorted(r.values(), key=lambda r: (r.dst.version, r.dst.prefixlen == 0,
                                                          str(r.dst))))
            for name, r in routes.items()}


def _default_routes(w: Wiring, routes: dict[str, dict[IPNet, PlannedRoute]]) -> set[str]:
    """Hosts with exactly one link, to a router, route everything through it."""
    default_hosts = set()
    for name, node in w.topo.nodes.items():
        if node.kind != "host" or len(w.adjacency[name]) != 1:
            continue
        peer = w.adjacency[name][0][0]
        if w.topo.nodes[peer].kind != "router":
            continue
        default_hosts.add(name)
        for zero in DEFAULTS:
            gw = w.gateway(name, peer, zero.version)
            if gw:
                routes[name][zero] = PlannedRoute(zero, gw[0], gw[1], "auto")
    return default_hosts


def _subnet_routes(w: Wiring, routes: dict[str, dict[IPNet, PlannedRoute]],
                   default_hosts: set[str]) -> None:
    """Per destination subnet: a BFS from its router end(s); transit only via routers."""
    topo = w.topo
    for link in topo.links:
        kinds = (topo.nodes[link.a.node].kind, topo.nodes[link.b.node].kind)
        if topo.addressing.routing == "hosts" and "host" not in kinds:
            continue
        roots = [end.node for end in (link.a, link.b) if topo.nodes[end.node].kind == "router"]
        if not roots:
            continue        # host-host link: only its two ends use it
        parents = _bfs_parents(roots, w.adjacency, topo)
        for subnet in {a.network for a in w.addresses[(link.index, 0)]}:
            for node, parent in parents.items():
                if node in (link.a.node, link.b.node) or node in default_hosts:
                    continue
                gw = w.gateway(node, parent, subnet.version)
                if gw and subnet not in routes[node]:
                    routes[node][subnet] = PlannedRoute(subnet, gw[0], gw[1], "auto")


def _bfs_parents(roots: list[str], adjacency: Adjacency, topo: Topology) -> dict[str, str]:
    """For every node reachable from ``roots`` through routers: its next hop towards them."""
    parents: dict[str, str] = {}
    seen = set(roots)
    queue = deque(roots)
    while queue:
        current = queue.popleft()
        if topo.nodes[current].kind != "router":
            continue
        for peer, _link, _side in adjacency[current]:
            if peer not in seen:
                seen.add(peer)
                parents[peer] = current
                queue.append(peer)
    return parents


def _router_components(topo: Topology, adjacency: Adjacency) -> dict[str, int]:
    """Each router's connected component over router-router links."""
    component: dict[str, int] = {}
    for name, node in topo.nodes.items():
        if node.kind != "router" or name in component:
            continue
        cid = len(component) + 1
        stack = [name]
        component[name] = cid
        while stack:
            cur = stack.pop()
            for peer, _l, _s in adjacency[cur]:
                if topo.nodes[peer].kind == "router" and peer not in component:
                    component[peer] = cid
                    stack.append(peer)
    return component


def check_reachability(topo: Topology, adjacency: Adjacency) -> None:
    """Every host must reach every other host (transit only through routers)."""
    hosts = topo.hosts
    if len(hosts) < 2:
        return
    component = _router_components(topo, adjacency)
    reach: dict[str, set[Any]] = {}
    for h in hosts:
        reach[h] = {component[p] if topo.nodes[p].kind == "router" else ("host", *sorted((h, p)))
                    for p, _l, _s in adjacency[h]}
    if set.intersection(*reach.values()):
        return
    for i, h1 in enumerate(hosts):
        for h2 in hosts[i + 1:]:
            if not reach[h1] & reach[h2]:
                raise ConfigError(f"host {h2!r} cannot be reached from host {h1!r}: hosts do "
                                  "not forward, so every host needs a path to every other host "
                                  "through routers (add a link)", file=topo.file, path="links")


def _resolve_explicit(w: Wiring, name: str, route: Route) -> PlannedRoute:
    topo, family, via = w.topo, route.to.version, route.via
    if via in topo.nodes:
        gw = w.gateway(name, via, family)
        if gw is None:
            raise ConfigError(f"route via {via!r}: {via!r} is not a neighbour of {name!r} "
                              f"with an IPv{family} address", file=topo.file,
                              path=f"{route.path}.via")
        return PlannedRoute(route.to, gw[0], gw[1], "explicit")
    try:
        addr = ipaddress.ip_address(via)
    except ValueError:
        raise ConfigError(f"via {via!r} is neither a node nor an IP address",
                          file=topo.file, path=f"{route.path}.via") from None
    if addr.version != family:
        raise ConfigError(f"via {addr} is IPv{addr.version} but {route.to} is IPv{family}",
                          file=topo.file, path=f"{route.path}.via")
    for _peer, link, side in w.adjacency[name]:
        for local in w.addresses[(link.index, side)]:
            if local.version == family and addr in local.network and addr != local.ip:
                return PlannedRoute(route.to, addr, w.ifnames[(link.index, side)], "explicit")
    raise ConfigError(f"via {addr} is not on any subnet of {name!r}'s links",
                      file=topo.file, path=f"{route.path}.via")
