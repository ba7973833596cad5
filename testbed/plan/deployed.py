"""A running testbed as one typed value: what ``up`` made, and what is in force.

``Deployed`` is the plan as realized (its nodes and links, the latter with
the impairments in force now, after any ``testbed link set`` or schedule
step), plus what only ``up`` knows: the congestion control each node got,
host changes, the link backend and where it put each emulated direction.
Every reader of a running testbed (``attach``, ``status``, ``link``,
``validate``, the scheduler, a run's recorded conditions) works on this
value.

state.json is this value written down: ``to_dict`` and ``from_dict`` are the
only code that knows its keys. A state.json of another version is refused
with a message naming the file; ``testbed down`` does not need it (it works
from the journal).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from testbed.errors import TestbedError
from testbed.model.impairment import Impairment
from testbed.model.schedule import ScheduleEntry
from testbed.plan.types import (SIDES, Plan, PlannedDirection, PlannedInterface, PlannedLink,
                                PlannedNode, PlannedRoute)
from testbed.units import Duration

STATE_VERSION = 2
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Place:
    """An interface in a namespace."""

    netns: str
    ifname: str


@dataclass(frozen=True)
class EmulatedDirection:
    """A link direction the link backend has in force, and where it put it.

    Its state is kept under the sender's ``netns``/``ifname``; the backend
    acts at that egress, except where ``ingress`` says otherwise (the
    userspace backend delays a host's traffic to a router at the router's
    ingress: ``testbed.emulation.links.placement`` decides).
    """

    link: int                    # index of the link
    side: str                    # "forward" (a -> b) or "reverse"
    sender: str
    receiver: str
    netns: str                   # the sender's
    ifname: str                  # the sender's interface
    tag: str                     # owner tag of everything the backend made for it
    ingress: Place | None = None

    @property
    def label(self) -> str:
        return f"{self.sender}->{self.receiver}"

    def is_of(self, d: PlannedDirection) -> bool:
        return (self.link, self.side) == (d.link.index, d.side)


@dataclass(frozen=True)
class Deployed:
    """One running testbed (see the module docstring)."""

    instance: str
    topology: str                          # the topology's name
    file: str | None                       # the file it was read from
    source: str                            # its YAML after templating
    variables: Mapping[str, Scalar]
    nodes: Mapping[str, PlannedNode]
    links: tuple[PlannedLink, ...]
    cc_in_force: Mapping[str, str] = field(default_factory=dict)
    host_changes: tuple[str, ...] = ()
    link_backend: str | None = None
    link_backend_reason: str | None = None
    emulated: tuple[EmulatedDirection, ...] = ()
    notes: tuple[str, ...] = ()
    schedule: tuple[ScheduleEntry, ...] = ()

    @classmethod
    def of(cls, plan: Plan, *, cc_in_force: Mapping[str, str] | None = None,
           host_changes: tuple[str, ...] = (), link_backend: str | None = None,
           link_backend_reason: str | None = None, emulated: tuple[EmulatedDirection, ...] = (),
           notes: tuple[str, ...] = ()) -> "Deployed":
        """``plan`` as ``up`` realized it (without the rest: as it would be, nothing emulated)."""
        topo = plan.topology
        variables = {k: v if isinstance(v, (str, int, float, bool)) or v is None else str(v)
                     for k, v in topo.variables.items()}
        return cls(instance=plan.instance, topology=topo.name, file=topo.file,
                   source=topo.source, variables=variables, nodes=dict(plan.nodes),
                   links=plan.links, cc_in_force=dict(cc_in_force or {}),
                   host_changes=tuple(host_changes), link_backend=link_backend,
                   link_backend_reason=link_backend_reason, emulated=tuple(emulated),
                   notes=tuple(notes), schedule=topo.schedule)

    def link(self, index: int) -> PlannedLink:
        return next(l for l in self.links if l.index == index)

    @property
    def directions(self) -> list[PlannedDirection]:
        """Both directions of every link, in link order."""
        return [d for link in self.links for d in link.directions]

    def emulation(self, d: PlannedDirection) -> EmulatedDirection | None:
        """Where the backend has direction ``d`` (None: not emulated)."""
        return next((e for e in self.emulated if e.is_of(d)), None)

    def with_direction(self, d: PlannedDirection, imp: Impairment,
                       emulated: EmulatedDirection | None, backend: str | None) -> "Deployed":
        """This testbed after a change of direction ``d``: ``imp`` in force, emulated
        by ``backend`` as ``emulated`` (None: no longer emulated)."""
        links = tuple(l.with_impairment(d.side, imp) if l.index == d.link.index else l
                      for l in self.links)
        kept = [emulated if e.is_of(d) else e for e in self.emulated]
        if emulated is not None and self.emulation(d) is None:
            kept.append(emulated)
        return replace(self, links=links, emulated=tuple(e for e in kept if e is not None),
                       link_backend=self.link_backend or backend)

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "instance": self.instance, "topology": self.topology,
                "file": self.file, "topology_source": self.source,
                "variables": dict(self.variables),
                "nodes": [_node_to_dict(n) for n in self.nodes.values()],
                "links": [_link_to_dict(l) for l in self.links],
                "cc_in_force": dict(self.cc_in_force), "host_changes": list(self.host_changes),
                "link_backend": self.link_backend,
                "link_backend_reason": self.link_backend_reason,
                "emulated": [_emulated_to_dict(e) for e in self.emulated],
                "notes": list(self.notes),
                "schedule": [_entry_to_dict(e) for e in self.schedule]}

    @classmethod
    def from_dict(cls, data: Any, *, file: str = "state.json") -> "Deployed":
        """Read what ``to_dict`` wrote; anything else is a TestbedError naming ``file``."""
        version = data.get("version") if isinstance(data, dict) else None
        if version != STATE_VERSION:
            raise TestbedError(_version_message(data, version, file))
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TestbedError(f"{file}: not a state file this version of testbed can read "
                               f"({type(exc).__name__}: {exc}); {_down_hint(data)}") from None

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> "Deployed":
        nodes = [_node_from_dict(n) for n in data["nodes"]]
        return cls(instance=data["instance"], topology=data["topology"], file=data["file"],
                   source=data["topology_source"], variables=dict(data["variables"]),
                   nodes={n.name: n for n in nodes},
                   links=tuple(_link_from_dict(l) for l in data["links"]),
                   cc_in_force=dict(data["cc_in_force"]),
                   host_changes=tuple(data["host_changes"]),
                   link_backend=data["link_backend"],
                   link_backend_reason=data["link_backend_reason"],
                   emulated=tuple(_emulated_from_dict(e) for e in data["emulated"]),
                   notes=tuple(data["notes"]),
                   schedule=tuple(_entry_from_dict(e) for e in data["schedule"]))


def _down_hint(data: Any) -> str:
    name = data.get("instance") if isinstance(data, dict) else None
    return (f"`testbed down --name {name if isinstance(name, str) else 'NAME'}` still takes "
            "it down (it works from the journal); then bring it up again")


def _version_message(data: Any, version: Any, file: str) -> str:
    if isinstance(version, int) and version < STATE_VERSION:
        who = f"an older version of testbed (state version {version})"
    elif isinstance(version, int):
        who = f"a newer version of testbed (state version {version})"
    else:
        who = "something other than testbed (no state version)"
    return (f"{file} was written by {who}; this version reads state version "
            f"{STATE_VERSION} only: {_down_hint(data)}")


def _node_to_dict(n: PlannedNode) -> dict[str, Any]:
    return {"name": n.name, "kind": n.kind, "netns": n.netns, "tag": n.tag, "cc": n.cc,
            "sysctls": [list(kv) for kv in n.sysctls],
            "interfaces": [{"ifname": i.ifname, "ifindex": i.ifindex, "link": i.link,
                            "peer": i.peer, "peer_ifname": i.peer_ifname, "mtu": i.mtu,
                            "addresses": [str(a) for a in i.addresses]}
                           for i in n.interfaces],
            "routes": [{"dst": str(r.dst), "gateway": str(r.gateway), "ifname": r.ifname,
                        "origin": r.origin} for r in n.routes]}


def _node_from_dict(d: dict[str, Any]) -> PlannedNode:
    return PlannedNode(
        name=d["name"], kind=d["kind"], netns=d["netns"], tag=d["tag"], cc=d["cc"],
        sysctls=tuple((str(k), str(v)) for k, v in d["sysctls"]),
        interfaces=tuple(PlannedInterface(
            ifname=i["ifname"], ifindex=i["ifindex"], link=i["link"], peer=i["peer"],
            peer_ifname=i["peer_ifname"], mtu=i["mtu"],
            addresses=tuple(ipaddress.ip_interface(a) for a in i["addresses"]))
            for i in d["interfaces"]),
        routes=tuple(PlannedRoute(ipaddress.ip_network(r["dst"]),
                                  ipaddress.ip_address(r["gateway"]), r["ifname"], r["origin"])
                     for r in d["routes"]))


def _link_to_dict(l: PlannedLink) -> dict[str, Any]:
    return {"index": l.index, "name": l.name, "a": l.a, "a_ifname": l.a_ifname, "b": l.b,
            "b_ifname": l.b_ifname, "mtu": l.mtu,
            "forward": l.forward.as_fields(), "reverse": l.reverse.as_fields()}


def _link_from_dict(d: dict[str, Any]) -> PlannedLink:
    return PlannedLink(index=d["index"], name=d["name"], a=d["a"], a_ifname=d["a_ifname"],
                       b=d["b"], b_ifname=d["b_ifname"], mtu=d["mtu"],
                       forward=Impairment.from_fields(d["forward"]),
                       reverse=Impairment.from_fields(d["reverse"]))


def _emulated_to_dict(e: EmulatedDirection) -> dict[str, Any]:
    return {"link": e.link, "side": e.side, "sender": e.sender, "receiver": e.receiver,
            "netns": e.netns, "ifname": e.ifname, "tag": e.tag,
            "ingress": None if e.ingress is None else {"netns": e.ingress.netns,
                                                       "ifname": e.ingress.ifname}}


def _emulated_from_dict(d: dict[str, Any]) -> EmulatedDirection:
    if d["side"] not in SIDES:
        raise ValueError(f"an emulated direction's side is forward or reverse, not {d['side']!r}")
    ingress = d["ingress"]
    return EmulatedDirection(
        link=d["link"], side=d["side"], sender=d["sender"], receiver=d["receiver"],
        netns=d["netns"], ifname=d["ifname"], tag=d["tag"],
        ingress=None if ingress is None else Place(ingress["netns"], ingress["ifname"]))


def _entry_to_dict(e: ScheduleEntry) -> dict[str, Any]:
    return {"index": e.index, "at_s": e.at.seconds, "link": e.link, "direction": e.direction,
            "set": e.set.as_fields(),
            "for_s": None if e.duration is None else e.duration.seconds}


def _entry_from_dict(d: dict[str, Any]) -> ScheduleEntry:
    return ScheduleEntry(at=Duration(d["at_s"]), link=d["link"],
                         set=Impairment.from_fields(d["set"]), direction=d["direction"],
                         duration=None if d["for_s"] is None else Duration(d["for_s"]),
                         index=d["index"])
