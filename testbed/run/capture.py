"""The workload's ``capture.interfaces``, read once: each entry names the
(node, interface) pairs to capture on, in a planned topology or a testbed
that is up (both have ``nodes`` with ``interfaces`` and ``links``).

``bottleneck`` is the emulated link with the lowest forward rate (or the first
emulated link), captured on its ``a`` end; ``node`` is every interface of a
node; ``node:ifname`` one interface; ``a-b`` the ``a`` end of the link between
two nodes."""

from __future__ import annotations

from typing import Any

CapturePoint = tuple[str, str]          # (node name, interface name)


def bottleneck(net: Any) -> list[CapturePoint]:
    emulated = [l for l in net.links if l.emulated]
    if not emulated:
        return []
    rated = [(l.forward.rate.bps, l) for l in emulated if l.forward.rate is not None]
    link = min(rated, key=lambda x: x[0])[1] if rated else emulated[0]
    return [(link.a, link.a_ifname)]


def resolve(spec: str, net: Any) -> tuple[list[CapturePoint], str | None]:
    """The interfaces one entry names, or what is wrong with it."""
    if spec == "bottleneck":
        return bottleneck(net), None
    if ":" in spec:
        node, ifname = spec.split(":", 1)
        if node not in net.nodes:
            return [], f"capture interface {spec!r}: no node {node!r}"
        names = sorted(i.ifname for i in net.nodes[node].interfaces)
        return ([(node, ifname)], None) if ifname in names else \
            ([], f"capture interface {spec!r}: {node} has {', '.join(names) or 'no interfaces'}")
    if spec in net.nodes:
        return [(spec, i.ifname) for i in net.nodes[spec].interfaces], None
    if "-" in spec and all(p in net.nodes for p in spec.split("-", 1)):
        a, b = spec.split("-", 1)
        link = next((l for l in net.links if {l.a, l.b} == {a, b}), None)
        if link is None:
            return [], f"capture interface {spec!r}: no link between {a} and {b}"
        return [(a, link.a_ifname if link.a == a else link.b_ifname)], None
    return [], (f"capture interface {spec!r}: write 'bottleneck', 'node', 'node:ifname' or "
                "'a-b' (a link) with nodes of the topology")


def capture_points(specs: list[str], net: Any) -> tuple[list[CapturePoint], list[tuple[int, str]]]:
    """Every (node, ifname) the entries name, and (index, problem) for each bad entry."""
    points: list[CapturePoint] = []
    problems: list[tuple[int, str]] = []
    for i, spec in enumerate(specs):
        found, problem = resolve(spec, net)
        points += found
        if problem is not None:
            problems.append((i, problem))
    return points, problems
