"""Which way packets go through a testbed that is up, from its plan (pure): the next hop
of a node towards an address, the whole forwarding path, and a host pair whose path
crosses one emulated direction (validate measures a router's direction with it)."""

from __future__ import annotations

import ipaddress
import math
from typing import Callable, Mapping

from testbed.model.impairment import Impairment
from testbed.plan.types import PlannedDirection, PlannedNode

Nodes = Mapping[str, PlannedNode]
Hop = tuple[str, int, str]          # (node, link index, next node)


def next_hop(nodes: Nodes, node: str, dst: str) -> tuple[int, str] | None:
    """(link index, peer) over which ``node`` sends to address ``dst``, from its planned
    addresses (connected) and routes (longest prefix); None: no route."""
    ip = ipaddress.ip_address(dst)
    n = nodes[node]
    for iface in n.interfaces:
        if any(a.version == ip.version and ip in a.network for a in iface.addresses):
            return iface.link, iface.peer
    best: tuple[int, str] | None = None
    best_len = -1
    for r in n.routes:
        if r.dst.version == ip.version and ip in r.dst and r.dst.prefixlen > best_len:
            iface = next((i for i in n.interfaces if i.ifname == r.ifname), None)
            if iface is not None:
                best, best_len = (iface.link, iface.peer), r.dst.prefixlen
    return best


def forwarding_path(nodes: Nodes, src: str, dst: str) -> list[Hop] | None:
    """The hops (node, link index, next node) from node ``src`` to address ``dst``."""
    owner = node_of(nodes, dst)
    hops: list[Hop] = []
    node = src
    while node != owner:
        hop = next_hop(nodes, node, dst)
        if hop is None or len(hops) > len(nodes):
            return None
        hops.append((node, hop[0], hop[1]))
        node = hop[1]
    return hops


def rate_path(nodes: Nodes, d: PlannedDirection,
              impairment_of: Callable[[str, int, str], Impairment | None]
              ) -> tuple[str, str] | None:
    """A host pair (sender host, receiver address) whose traffic crosses direction ``d``
    and no other hop that could lower its rate (loss, jitter, reorder, a lower rate),
    shortest first; None if there is none. Rate tests of a router's direction go
    this way: a router's own sockets sit behind its egress delay line, where TCP small
    queues and the socket buffer cap them far below the link rate."""
    this = (d.sender, d.link.index, d.receiver)
    target = impairment_of(*this)
    rate = target.rate.bps if target and target.rate else math.inf

    def lowers_rate(hop: Hop) -> bool:
        imp = impairment_of(*hop) if hop != this else None
        return imp is not None and (imp.acts_per_packet
                                    or imp.rate is not None and imp.rate.bps < rate)
    hosts = sorted(n for n, v in nodes.items() if v.kind == "host")
    best: tuple[int, str, str] | None = None
    for a in hosts:
        for b in hosts:
            addr = nodes[b].ipv4 or nodes[b].ipv6
            if a == b or addr is None:
                continue
            hops = forwarding_path(nodes, a, addr)
            if not hops or this not in hops or any(lowers_rate(h) for h in hops):
                continue
            if best is None or len(hops) < best[0]:
                best = (len(hops), a, addr)
    return None if best is None else (best[1], best[2])


def node_of(nodes: Nodes, addr: str) -> str | None:
    """The node that has address ``addr``."""
    ip = ipaddress.ip_address(addr)
    return next((name for name, n in nodes.items() for i in n.interfaces
                 if any(a.ip == ip for a in i.addresses)), None)
