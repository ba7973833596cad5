"""The plan's types: every kernel object ``up`` makes, named and in order.

A ``Plan`` (made by ``testbed.plan.planner.make_plan``) holds the nodes with
their interfaces, addresses, routes and sysctls, and the links with their
impairments. The naming rules (namespace names, ownership tags, interface
indexes) live here too, so that the realizer and ``doctor`` name things as
the planner did.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from testbed.model.impairment import Impairment
from testbed.model.topology import Topology

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

    def direction(self, side: str) -> "PlannedDirection":
        """``forward`` (a -> b) or ``reverse`` (b -> a)."""
        if side not in SIDES:
            raise ValueError(f"a link's side is forward or reverse, not {side!r}")
        return PlannedDirection(self, side)

    @property
    def directions(self) -> tuple["PlannedDirection", "PlannedDirection"]:
        return PlannedDirection(self, "forward"), PlannedDirection(self, "reverse")

    def with_impairment(self, side: str, imp: Impairment) -> "PlannedLink":
        return replace(self, **{side: imp})


SIDES = ("forward", "reverse")


@dataclass(frozen=True)
class PlannedDirection:
    """One direction of a link, ``sender`` -> ``receiver``, at the sender's egress
    ``sender:ifname``: ``forward`` is the link's a -> b, ``reverse`` its b -> a."""

    link: PlannedLink
    side: str

    @property
    def sender(self) -> str:
        return self.link.a if self.side == "forward" else self.link.b

    @property
    def receiver(self) -> str:
        return self.link.b if self.side == "forward" else self.link.a

    @property
    def ifname(self) -> str:
        """The sender's interface."""
        return self.link.a_ifname if self.side == "forward" else self.link.b_ifname

    @property
    def peer_ifname(self) -> str:
        """The receiver's interface."""
        return self.link.b_ifname if self.side == "forward" else self.link.a_ifname

    @property
    def impairment(self) -> Impairment:
        return self.link.forward if self.side == "forward" else self.link.reverse

    @property
    def label(self) -> str:
        return f"{self.sender}->{self.receiver}"


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
        """The plan as ``testbed plan --json`` prints it (state.json is
        ``testbed.plan.deployed.Deployed.to_dict``)."""
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
