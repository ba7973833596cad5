"""The planner: a validated topology becomes an explicit, printable plan.

The plan names every kernel object ``up`` will make (namespaces, interfaces,
addresses, routes, sysctls, congestion control, emulated links), in order.
It is pure: ``testbed plan`` prints it and the realizer executes it without
ever looking at YAML.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from testbed.plan import hoplimit
from testbed.errors import ConfigError
from testbed.model.impairment import Impairment
from testbed.model.topology import Link, Topology

NETNS_PREFIX = "tb-"
TAG_PREFIX = "testbed."
DEFAULT_CC = "cubic"
# Interface indexes are chosen by the plan, not the kernel: 2 per link, well
# above the small numbers the kernel hands out itself. Both ends of a veth
# then always differ in ifindex (the kernel delays carrier-on by up to 1 s
# for a veth whose ifindex equals its peer's) and no lookup is needed later.
# They stay below 65536 so that they can double as NFQUEUE numbers.
IFINDEX_BASE = 10000
MAX_LINKS = (65536 - IFINDEX_BASE) // 2

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def netns_name(instance: str, node: str) -> str:
    return f"{NETNS_PREFIX}{instance}-{node}"


def ifindex(link: int, side: int) -> int:
    return IFINDEX_BASE + 2 * link + side


def owner_tag(instance: str, node: str) -> str:
    """The altname put on a namespace's ``lo``: the kernel-side mark of ownership."""
    return f"{TAG_PREFIX}{instance}.{node}"


@dataclass(frozen=True)
class PlannedInterface:
    ifname: str
    ifindex: int
    link: int                    # index of the link in the topology
    peer: str                    # the node at the other end
    peer_ifname: str
    mtu: int
    addresses: tuple[IPIface, ...]


@dataclass(frozen=True)
class PlannedRoute:
    dst: IPNet
    gateway: IPAddr
    ifname: str
    origin: str                  # "auto" or "explicit"

    def __str__(self) -> str:
        dst = "default" if dst_is_default(self.dst) else str(self.dst)
        return f"{dst} via {self.gateway} dev {self.ifname} ({self.origin})"


def first_address(interfaces, version: int) -> str | None:
    """A node's primary address of one IP version: the first on its first interfaces."""
    for iface in interfaces:
        for addr in iface.addresses:
            if addr.version == version:
                return str(addr.ip)
    return None


def dst_is_default(net: IPNet) -> bool:
    return net.prefixlen == 0


@dataclass(frozen=True)
class PlannedNode:
    name: str
    kind: str
    netns: str
    tag: str
    cc: str
    sysctls: tuple[tuple[str, str], ...]
    interfaces: tuple[PlannedInterface, ...]
    routes: tuple[PlannedRoute, ...]

    @property
    def ipv4(self) -> str | None:
        return first_address(self.interfaces, 4)

    @property
    def ipv6(self) -> str | None:
        return first_address(self.interfaces, 6)


@dataclass(frozen=True)
class PlannedLink:
    index: int
    name: str
    a: str
    a_ifname: str
    b: str
    b_ifname: str
    mtu: int
    forward: Impairment          # a -> b, applied at a's egress
    reverse: Impairment          # b -> a, applied at b's egress

    @property
    def emulated(self) -> bool:
        return not (self.forward.is_empty and self.reverse.is_empty)


@dataclass
class Plan:
    instance: str
    topology: Topology
    nodes: dict[str, PlannedNode]
    links: tuple[PlannedLink, ...]
    ccs: tuple[str, ...] = field(default=())
    notes: tuple[str, ...] = ()  # for the user: what the plan did on its own, or doubts

    def hosts_file(self) -> str:
        """/etc/hosts for commands run in the nodes, so node names resolve."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for node in self.nodes.values():
            if node.ipv4:
                lines.append(f"{node.ipv4}\t{node.name}")
            if node.ipv6:
                lines.append(f"{node.ipv6}\t{node.name}")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "topology": self.topology.name,
            "file": self.topology.file,
            "nodes": {
                n.name: {
                    "kind": n.kind, "netns": n.netns, "tag": n.tag, "cc": n.cc,
                    "sysctls": dict(n.sysctls),
                    "interfaces": [
                        {"ifname": i.ifname, "ifindex": i.ifindex, "link": i.link, "peer": i.peer,
                         "peer_ifname": i.peer_ifname, "mtu": i.mtu,
                         "addresses": [str(a) for a in i.addresses]}
                        for i in n.interfaces],
                    "routes": [{"dst": str(r.dst), "gateway": str(r.gateway),
                                "ifname": r.ifname, "origin": r.origin} for r in n.routes],
                } for n in self.nodes.values()},
            "links": [
                {"index": l.index, "name": l.name, "a": l.a, "a_ifname": l.a_ifname,
                 "b": l.b, "b_ifname": l.b_ifname, "mtu": l.mtu,
                 "forward": l.forward.describe(), "reverse": l.reverse.describe()}
                for l in self.links],
        }

    def render(self) -> str:
        """The plan as text, in the order ``up`` carries it out."""
        out = [f"plan for instance {self.instance!r} (topology {self.topology.name!r} "
               f"from {self.topology.file})",
               f"1. namespaces ({len(self.nodes)}), each tagged on lo with its owner altname:"]
        for n in self.nodes.values():
            out.append(f"   {n.netns:<28} {n.kind:<6} tag {n.tag}")
        out.append(f"2. veth pairs ({len(self.links)}):")
        for l in self.links:
            out.append(f"   {l.a}:{l.a_ifname} <-> {l.b}:{l.b_ifname}  mtu {l.mtu}")
        out.append("3. per node: addresses, links up, routes, sysctls, congestion control:")
        for n in self.nodes.values():
            out.append(f"   {n.name} ({n.kind}, cc {n.cc})")
            for i in n.interfaces:
                out.append(f"     {i.ifname}: {', '.join(str(a) for a in i.addresses)}"
                           f"  -> {i.peer}:{i.peer_ifname}")
            for r in n.routes:
                out.append(f"     route {r}")
            for key, value in n.sysctls:
                out.append(f"     sysctl {key}={value}")
        emulated = [l for l in self.links if l.emulated]
        if emulated:
            out.append("4. emulated links (backend chosen at up time):")
            for l in emulated:
                out.append(f"   {l.a}->{l.b} at {l.a}:{l.a_ifname}: {l.forward.describe()}")
                out.append(f"   {l.b}->{l.a} at {l.b}:{l.b_ifname}: {l.reverse.describe()}")
        out += [f"note: {note}" for note in self.notes]
        return "\n".join(out)


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


def make_plan(topo: Topology, instance: str | None = None) -> Plan:
    """Turn a topology into a plan. Raises ConfigError for what only shows here."""
    instance = instance or topo.name
    addressing = topo.addressing
    if len(topo.links) > MAX_LINKS:
        raise ConfigError(f"{len(topo.links)} links: at most {MAX_LINKS} are supported",
                          file=topo.file, path="links")

    # 1. interface names
    ifnames: dict[tuple[int, int], str] = {}
    used: dict[str, set[str]] = {n: set() for n in topo.nodes}
    for link in topo.links:
        for j, end in enumerate((link.a, link.b)):
            if end.ifname:
                used[end.node].add(end.ifname)
    counters = {n: 0 for n in topo.nodes}
    for link in topo.links:
        for j, end in enumerate((link.a, link.b)):
            if end.ifname:
                ifnames[(link.index, j)] = end.ifname
                continue
            while f"eth{counters[end.node]}" in used[end.node]:
                counters[end.node] += 1
            name = f"eth{counters[end.node]}"
            used[end.node].add(name)
            ifnames[(link.index, j)] = name

    # 2. addresses
    def allocate(family: str, pool: IPNet | None, prefix: int) -> dict[int, tuple[IPIface, IPIface]]:
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
            iface = ipaddress.ip_interface
            out[link.index] = (iface(f"{ha}/{prefix}"), iface(f"{hb}/{prefix}"))
        return out

    v4 = allocate("ipv4", addressing.ipv4, addressing.prefix)
    v6 = allocate("ipv6", addressing.ipv6, 64)

    def link_addrs(index: int, side: int) -> tuple[IPIface, ...]:
        out = []
        for table in (v4, v6):
            if index in table:
                out.append(table[index][side])
        return tuple(out)

    # 3. adjacency (neighbour lists in link order)
    adjacency: dict[str, list[tuple[str, Link, int]]] = {n: [] for n in topo.nodes}
    for link in topo.links:
        adjacency[link.a.node].append((link.b.node, link, 0))
        adjacency[link.b.node].append((link.a.node, link, 1))

    _check_reachability(topo, adjacency)
    hops, ttl = hoplimit.needed_ttl(topo, adjacency)
    notes = [hoplimit.describe(hops, ttl)] if ttl is not None else []

    routes: dict[str, dict[IPNet, PlannedRoute]] = {n: {} for n in topo.nodes}

    def gateway(node: str, neighbour: str, family: int) -> tuple[IPAddr, str] | None:
        """The neighbour's address on the first link between them, and our ifname there."""
        for peer, link, side in adjacency[node]:
            if peer != neighbour:
                continue
            for addr in link_addrs(link.index, 1 - side):
                if addr.version == family:
                    return addr.ip, ifnames[(link.index, side)]
        return None

    # hosts with exactly one link to a router use a default route
    default_hosts = set()
    for name, node in topo.nodes.items():
        if node.kind == "host" and len(adjacency[name]) == 1:
            peer = adjacency[name][0][0]
            if topo.nodes[peer].kind == "router":
                default_hosts.add(name)
                for family, zero in ((4, ipaddress.ip_network("0.0.0.0/0")),
                                     (6, ipaddress.ip_network("::/0"))):
                    gw = gateway(name, peer, family)
                    if gw:
                        routes[name][zero] = PlannedRoute(zero, gw[0], gw[1], "auto")

    # per destination subnet: BFS from its router end(s); transit only via routers
    for link in topo.links:
        kinds = (topo.nodes[link.a.node].kind, topo.nodes[link.b.node].kind)
        has_host = "host" in kinds
        if addressing.routing == "hosts" and not has_host:
            continue
        roots = [end.node for end in (link.a, link.b) if topo.nodes[end.node].kind == "router"]
        if not roots:
            continue        # host-host link: only its two ends use it
        parents = _bfs_parents(roots, adjacency, topo)
        for subnet in {a.network for a in link_addrs(link.index, 0)}:
            for node, parent in parents.items():
                if node in (link.a.node, link.b.node) or node in default_hosts:
                    continue
                gw = gateway(node, parent, subnet.version)
                if gw and subnet not in routes[node]:
                    routes[node][subnet] = PlannedRoute(subnet, gw[0], gw[1], "auto")

    # explicit routes override
    for name, node in topo.nodes.items():
        for route in node.routes:
            resolved = _resolve_explicit(topo, name, route, adjacency, link_addrs, ifnames, gateway)
            routes[name][route.to] = resolved

    ccs = set()
    planned: dict[str, PlannedNode] = {}
    for name, node in topo.nodes.items():
        ifaces = []
        for peer, link, side in adjacency[name]:
            ifaces.append(PlannedInterface(
                ifname=ifnames[(link.index, side)], ifindex=ifindex(link.index, side),
                link=link.index, peer=peer,
                peer_ifname=ifnames[(link.index, 1 - side)], mtu=link.mtu,
                addresses=link_addrs(link.index, side)))
        cc = node.cc or DEFAULT_CC
        ccs.add(cc)
        sysctls = [("net.ipv4.ip_forward", "1" if node.kind == "router" else "0")]
        ipv6 = addressing.ipv6 is not None or any(a.version == 6 for i in ifaces
                                                  for a in i.addresses)
        if ipv6:
            sysctls.append(("net.ipv6.conf.all.forwarding", "1" if node.kind == "router" else "0"))
        sysctls.append(("net.ipv4.tcp_congestion_control", cc))
        if ttl is not None:
            sysctls += hoplimit.ttl_sysctls(ttl, [i.ifname for i in ifaces], ipv6)
        user = dict(node.sysctls)
        notes += hoplimit.too_low(name, user, hops)
        if "net.ipv4.tcp_congestion_control" in user:
            raise ConfigError("set the congestion control with 'cc:', not as a sysctl",
                              file=topo.file, path=f"nodes.{name}.sysctls")
        sysctls = [(k, v) for k, v in sysctls if k not in user] + list(user.items())
        planned[name] = PlannedNode(
            name=name, kind=node.kind, netns=netns_name(instance, name),
            tag=owner_tag(instance, name), cc=cc, sysctls=tuple(sysctls),
            interfaces=tuple(ifaces),
            routes=tuple(sorted(routes[name].values(),
                                key=lambda r: (r.dst.version, r.dst.prefixlen == 0, str(r.dst)))))

    links = tuple(PlannedLink(index=l.index, name=l.name, a=l.a.node,
                              a_ifname=ifnames[(l.index, 0)], b=l.b.node,
                              b_ifname=ifnames[(l.index, 1)], mtu=l.mtu,
                              forward=l.forward, reverse=l.reverse) for l in topo.links)
    return Plan(instance=instance, topology=topo, nodes=planned, links=links,
                ccs=tuple(sorted(ccs)), notes=tuple(notes))


def _bfs_parents(roots: list[str], adjacency: dict[str, list[tuple[str, Link, int]]],
                 topo: Topology) -> dict[str, str]:
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


def _check_reachability(topo: Topology, adjacency: dict[str, list[tuple[str, Link, int]]]) -> None:
    """Every host must reach every other host (transit only through routers)."""
    hosts = topo.hosts
    if len(hosts) < 2:
        return
    # router components
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
    reach: dict[str, set[Any]] = {}
    for h in hosts:
        reach[h] = {component[p] if topo.nodes[p].kind == "router" else ("host", *sorted((h, p)))
                    for p, _l, _s in adjacency[h]}
    common = set.intersection(*reach.values())
    if common:
        return
    for i, h1 in enumerate(hosts):
        for h2 in hosts[i + 1:]:
            if not reach[h1] & reach[h2]:
                raise ConfigError(f"host {h2!r} cannot be reached from host {h1!r}: hosts do "
                                  "not forward, so every host needs a path to every other host "
                                  "through routers (add a link)", file=topo.file, path="links")


def _resolve_explicit(topo, name, route, adjacency, link_addrs, ifnames, gateway) -> PlannedRoute:
    family = route.to.version
    via = route.via
    if via in topo.nodes:
        gw = gateway(name, via, family)
        if gw is None:
            raise ConfigError(f"route via {via!r}: {via!r} is not a neighbour of {name!r} "
                              f"with an IPv{family} address", file=topo.file, path=f"{route.path}.via")
        return PlannedRoute(route.to, gw[0], gw[1], "explicit")
    try:
        addr = ipaddress.ip_address(via)
    except ValueError:
        raise ConfigError(f"via {via!r} is neither a node nor an IP address",
                          file=topo.file, path=f"{route.path}.via") from None
    if addr.version != family:
        raise ConfigError(f"via {addr} is IPv{addr.version} but {route.to} is IPv{family}",
                          file=topo.file, path=f"{route.path}.via")
    for peer, link, side in adjacency[name]:
        for local in link_addrs(link.index, side):
            if local.version == family and addr in local.network and addr != local.ip:
                return PlannedRoute(route.to, addr, ifnames[(link.index, side)], "explicit")
    raise ConfigError(f"via {addr} is not on any subnet of {name!r}'s links",
                      file=topo.file, path=f"{route.path}.via")
