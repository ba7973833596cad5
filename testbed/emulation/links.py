"""Emulated links of a plan: choose the backend, check it can do everything, apply, supervise.

Each direction of a link is applied at the egress of its sending interface,
in that node's namespace (and, where ``placement`` says, at the receiver's
ingress). Everything the chosen backend cannot do is
reported at once, before the first kernel change, naming the backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from testbed.emulation.common import Target
from testbed.errors import PreflightError
from testbed.model.impairment import Impairment, round_trip
from testbed.plan.deployed import EmulatedDirection, Place
from testbed.plan.types import Plan, PlannedDirection, PlannedLink, PlannedNode
from testbed.units import Duration

if TYPE_CHECKING:     # testbed.emulation imports pyroute2 (~0.25 s): only when a link needs it
    from testbed.emulation import Backend, Selection


def directions(plan: Plan) -> Iterator[PlannedDirection]:
    """The directions the plan emulates (those with an impairment), in link order."""
    for link in plan.links:
        for d in link.directions:
            if not d.impairment.is_empty:
                yield d


def placement(backend: str, d: PlannedDirection,
              nodes: Mapping[str, PlannedNode]) -> Place | None:
    """Where ``backend`` puts direction ``d`` besides its sender's egress (None: nowhere).

    The userspace backend delays a host's traffic to a router after it has
    crossed the link, at the router's ingress (see userspace.py).
    """
    if backend == "userspace" and nodes[d.sender].kind == "host" \
            and nodes[d.receiver].kind == "router":
        return Place(nodes[d.receiver].netns, d.peer_ifname)
    return None


def emulated(backend: str, d: PlannedDirection,
             nodes: Mapping[str, PlannedNode]) -> EmulatedDirection:
    """Direction ``d`` as ``backend`` emulates it: at the sender's egress, and ``placement``."""
    sender = nodes[d.sender]
    return EmulatedDirection(link=d.link.index, side=d.side, sender=d.sender,
                             receiver=d.receiver, netns=sender.netns, ifname=d.ifname,
                             tag=sender.tag, ingress=placement(backend, d, nodes))


def apply_direction(backend: Backend, e: EmulatedDirection, imp: Impairment, state_dir: Path,
                    rtt: Duration | None, mtu: int) -> None:
    """Put ``imp`` in force on one direction, where ``e`` says."""
    if e.ingress is None:
        backend.apply(e.netns, e.ifname, imp, owner_tag=e.tag, state_dir=state_dir,
                      rtt_hint=rtt, mtu=mtu)
    else:
        backend.apply(e.netns, e.ifname, imp, owner_tag=e.tag, state_dir=state_dir,
                      rtt_hint=rtt, mtu=mtu, ingress=(e.ingress.netns, e.ingress.ifname))


def rtt_hint(link: PlannedLink) -> Duration | None:
    """The round trip this link adds: the base for buffers given as a BDP multiple.

    None for a link without delay: the backend then sizes BDP buffers (and the
    default buffer of a rate without ``queue``) for a 100 ms path, not for the
    microseconds of a veth, which would leave a 2-packet buffer.
    """
    return round_trip(link.forward, link.reverse)


def needs_per_packet(plan: Plan) -> bool:
    return any(d.impairment.acts_per_packet for d in directions(plan))


def choose(plan: Plan, requested: str, seed: int | None = None) -> Selection | None:
    """Pick the backend and check every emulated direction against it (no changes).
    ``seed``: for the userspace backend's random draws (None: its own default)."""
    wanted = list(directions(plan))
    if not wanted:
        if requested not in ("auto", "netem", "userspace"):
            raise PreflightError(f"unknown link backend {requested!r}; choose auto, netem, userspace")
        return None
    from testbed.emulation import select_backend
    selection = select_backend(requested, seed)
    from testbed.emulation import BACKENDS
    problems = []
    netem_could = True
    for d in wanted:
        found = selection.backend.unsupported(d.impairment)
        problems += [f"link {d.label}: {problem}" for problem in found]
        if found and BACKENDS["netem"]().unsupported(d.impairment):
            netem_could = False
    if problems:
        hint = ("remove or change those impairments, or use a kernel with sch_netem (see "
                "vagrant/guest)" if netem_could and selection.backend.name != "netem"
                else "remove or change those impairments")
        raise PreflightError(f"the {selection.backend.name} link backend cannot emulate what "
                             f"the topology asks for ({selection.reason}):\n  - " +
                             "\n  - ".join(problems) + "\n" + hint)
    return selection


def steps(plan: Plan, selection: Selection) -> list[str]:
    out = []
    for d in directions(plan):
        node = plan.nodes[d.sender]
        place = placement(selection.backend.name, d, plan.nodes)
        where = {} if place is None else {"ingress": (place.netns, place.ifname)}
        for step in selection.backend.plan(node.netns, d.ifname, d.impairment,
                                           rtt_hint(d.link), d.link.mtu, **where):
            out.append(f"{d.label}: {step}")
    return out


def apply(plan: Plan, selection: Selection, state_dir: Path) -> list[str]:
    """Apply every emulated direction; returns notes for the user (e.g. offloads)."""
    from testbed.emulation import set_offloads
    notes = []
    if needs_per_packet(plan):
        # A GSO super-packet is one skb until it leaves the last device: a loss
        # or delay rule acting on it would act on ~40 segments at once.
        for node in plan.nodes.values():
            for iface in node.interfaces:
                set_offloads(node.netns, iface.ifname, False)
        notes.append("offloads (TSO/GSO/GRO) turned off on every interface so that loss, "
                     "jitter, reordering and AQMs act per packet, not per GSO super-packet")
    for d in directions(plan):
        node = plan.nodes[d.sender]
        if selection.backend.name == "userspace" and node.kind == "host" \
                and plan.nodes[d.receiver].kind == "host" and d.impairment.delay:
            notes.append(f"link {d.label}: the userspace delay line sits in {d.sender}'s own "
                         "egress, where TCP Small Queues cap a bulk TCP sender at a few "
                         "Mbit/s per 10 ms of delay; put a router between hosts for bulk TCP")
    notes += selection.backend.apply_all([target(selection.backend.name, d, plan.nodes)
                                          for d in directions(plan)], state_dir=state_dir) or []
    return notes


def target(backend: str, d: PlannedDirection, nodes: Mapping[str, PlannedNode]) -> Target:
    """Direction ``d`` as a backend's ``apply_all`` takes it."""
    e = emulated(backend, d, nodes)
    queue = next(i.ifindex for i in nodes[d.sender].interfaces if i.ifname == d.ifname)
    return Target(e.netns, e.ifname, d.impairment, e.tag, rtt_hint(d.link), d.link.mtu, queue,
                  None if e.ingress is None else (e.ingress.netns, e.ingress.ifname))


def check_alive(backend_name: str, emulated: Iterable[EmulatedDirection],
                state_dir: Path) -> None:
    """Raise if a user-space part of any emulated direction has died."""
    from testbed.emulation import BACKENDS
    backend = BACKENDS[backend_name]()
    for e in emulated:
        backend.check_alive(e.netns, e.ifname, owner_tag=e.tag, state_dir=state_dir)
