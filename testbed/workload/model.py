"""Typed, validated description of a workload. Pure data, no I/O.

A workload names (or embeds) a topology and lists flows between its nodes.
Everything here is checked structurally; checks that need the topology
(node names) or the host (congestion controls, binaries) happen later, in
``testbed.run.preflight``, before anything is started.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from testbed.model.document import Document
from testbed.model.schedule import ScheduleEntry, parse_schedule
from testbed.units import Duration, Rate, Size

FLOW_PROTOCOLS = ("tcp", "udp")
FLOW_KINDS = ("bulk", "rr")


@dataclass(frozen=True)
class RequestResponse:
    """Request/response traffic: the client sends ``request`` bytes, the server
    answers with ``response`` bytes, the client waits ``think`` and repeats."""

    request: Size
    response: Size
    think: Duration = Duration(0.0)


@dataclass(frozen=True)
class Flow:
    """One line of ``flows:``; ``count`` parallel connections with equal settings."""

    name: str
    src: str
    dst: str
    protocol: str = "tcp"
    cc: str | None = None
    start: Duration = Duration(0.0)
    duration: Duration | None = None
    size: Size | None = None
    count: int = 1
    rate: Rate | None = None
    packet_size: Size = Size(1200)
    rr: RequestResponse | None = None
    driver: str | None = None
    rcvbuf: Size | None = None     # the receiver's SO_RCVBUF: caps the window it offers
    sndbuf: Size | None = None     # the sender's SO_SNDBUF: caps what it keeps in flight
    yaml_path: str = ""

    @property
    def kind(self) -> str:
        return "rr" if self.rr is not None else "bulk"

    def end_bound(self, default_duration: Duration) -> float:
        """Latest planned end in seconds after t0 (size-bounded flows use the default)."""
        return self.start.seconds + (self.duration or default_duration).seconds


@dataclass(frozen=True)
class Sampling:
    """How often each collector samples, and whether the kernel's TCP events are
    recorded (``tcp_events``: on by default where tracefs offers them)."""

    tcp_info: Duration = Duration(0.010)
    qdisc: Duration = Duration(0.100)
    host: Duration = Duration(0.500)
    tcp_events: bool = True


@dataclass(frozen=True)
class Capture:
    """Packet capture: which interfaces (``node:ifname``, ``node``, ``a-b`` for a
    link, or ``bottleneck``) and how many bytes of each packet."""

    enabled: bool = True
    interfaces: tuple[str, ...] = ("bottleneck",)
    snaplen: int = 128


@dataclass(frozen=True)
class Workload:
    """A workload for one point of its matrix (variables already substituted)."""

    name: str
    file: Path
    description: str
    topology_path: Path | None
    topology_inline: dict[str, Any] | None
    variables: dict[str, Any]
    flows: tuple[Flow, ...]
    duration: Duration
    sampling: Sampling = field(default_factory=Sampling)
    capture: Capture = field(default_factory=Capture)
    seed: int = 1
    rendered_text: str = ""
    # ``schedule:`` as written (checked against the topology's links by ``schedule_entries``)
    schedule_doc: Document | None = field(default=None, repr=False, compare=False)

    def router_notes(self, kinds: Mapping[str, str]) -> list[str]:
        """A note for each flow that starts or ends on a router (``kinds``: node -> kind):
        allowed, but usually a slip for a host; its traffic skips the access links and
        shares the router's CPU with the forwarding it measures."""
        hosts = sorted(n for n, k in kinds.items() if k == "host")
        notes = []
        for flow in self.flows:
            for key, node in (("from", flow.src), ("to", flow.dst)):
                if kinds.get(node) == "router":
                    notes.append(f"{self.file.name}: {flow.yaml_path}.{key}: {node} is a router; "
                                 f"its traffic skips the access links and shares the router's "
                                 f"CPU with forwarding (hosts: {', '.join(hosts) or 'none'})")
        return notes

    def schedule_entries(self, links: Sequence[Any], first_index: int = 0
                         ) -> tuple[ScheduleEntry, ...]:
        """The workload's link schedule, checked against the topology's ``links`` (errors name
        the workload file and ``schedule[i]``). Numbered from ``first_index``: after the
        topology's own entries, so that each entry of the run has its own index."""
        if self.schedule_doc is None:
            return ()
        return tuple(replace(e, index=first_index + e.index)
                     for e in parse_schedule(self.schedule_doc, self.schedule_doc.data, links))

    @property
    def planned_seconds(self) -> float:
        return max((f.end_bound(self.duration) for f in self.flows), default=0.0)
