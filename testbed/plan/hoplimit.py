"""How many hops a packet must survive: the IPv4 TTL and IPv6 hop limit of every node.

Linux sends with TTL 64 (``net.ipv4.ip_default_ttl``) and hop limit 64
(``net.ipv6.conf.*.hop_limit``); every router a packet crosses takes one,
so a packet crossing more than 64 links dies on the way (a line of 100
routers: ping from one end to the other never arrives). The planner knows
the longest path: when it is longer than ``DEFAULT_TTL`` less
``TTL_MARGIN`` (slack for explicit routes that take a longer way), every
node gets sysctls raising both to the path plus the margin, up to 255, the
most the IP headers hold. A path longer than 255 links is allowed (a long line is
a fine benchmark of ``up``, and its neighbours still talk) but said: its ends can
never reach each other. A value the topology sets itself wins, and a value
too low for the path is reported (``notes``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Sequence

from testbed.model.topology import Topology

DEFAULT_TTL = 64
MAX_TTL = 255
TTL_MARGIN = 8
IPV4_TTL = "net.ipv4.ip_default_ttl"

Adjacency = Mapping[str, Sequence[tuple[str, Any, int]]]   # node -> (peer, link, side)


def longest_path(topo: Topology, adjacency: Adjacency) -> int:
    """The most links a packet crosses between two nodes on the planner's shortest paths
    (transit only through routers). Measured from each router: a host's path is one link to
    a router and that router's way on (exact for a host on one router, else an upper bound)."""
    longest = 1 if any(adjacency.values()) else 0
    for name, node in topo.nodes.items():
        if node.kind == "router":
            hosts = any(topo.nodes[peer].kind == "host" for peer, _l, _s in adjacency[name])
            longest = max(longest, _eccentricity(topo, adjacency, name) + hosts)
    return longest


def _eccentricity(topo: Topology, adjacency: Adjacency, router: str) -> int:
    """The most links from ``router`` to any node it reaches through routers."""
    depth = {router: 0}
    queue = deque([router])
    while queue:
        node = queue.popleft()
        if topo.nodes[node].kind != "router":
            continue
        for peer, _link, _side in adjacency[node]:
            if peer not in depth:
                depth[peer] = depth[node] + 1
                queue.append(peer)
    return max(depth.values())


def needed_ttl(topo: Topology, adjacency: Adjacency) -> tuple[int, int | None]:
    """(longest path in links, the TTL every node needs; None: the kernel's 64 will do)."""
    hops = longest_path(topo, adjacency)
    if hops + TTL_MARGIN <= DEFAULT_TTL:
        return hops, None
    return hops, min(MAX_TTL, hops + TTL_MARGIN)


def ttl_sysctls(ttl: int, ifnames: Sequence[str], ipv6: bool) -> list[tuple[str, str]]:
    """The sysctls that make a node send with ``ttl``. IPv6 takes the hop limit of the
    outgoing interface, and interfaces exist before sysctls are set: each gets it."""
    out = [(IPV4_TTL, str(ttl))]
    if ipv6:
        out += [(f"net.ipv6.conf.{name}.hop_limit", str(ttl))
                for name in ("all", "default", *ifnames)]
    return out


def too_low(node: str, user: Mapping[str, str], hops: int) -> list[str]:
    """Notes for TTL or hop-limit sysctls a topology sets below what its longest path needs."""
    notes = []
    for key, value in user.items():
        if key == IPV4_TTL or (key.startswith("net.ipv6.conf.") and key.endswith(".hop_limit")):
            if value.isdigit() and int(value) < hops:
                notes.append(f"node {node}: {key}={value} (set in the topology) is below the "
                             f"{hops} links of the longest path: its packets can die on the way")
    return notes


def describe(hops: int, ttl: int) -> str:
    if hops > MAX_TTL:
        return (f"the longest path crosses {hops} links; a packet crosses at most {MAX_TTL} "
                "(the largest IPv4 TTL and IPv6 hop limit): nodes more than that apart can "
                f"never reach each other. Every node sends with TTL and hop limit {ttl}")
    return (f"the longest path crosses {hops} links, near or over the default TTL of "
            f"{DEFAULT_TTL}: every node sends with TTL and hop limit {ttl} "
            f"({ttl - hops} to spare)")
