"""Emulated links of a testbed that is up: find them by name, show them, change them.

A link is named ``<a>-<b>`` as in the topology (``b-a`` is accepted too;
then ``forward`` means b -> a, i.e. the direction as named). Each direction
lives at its sender's egress, in the backend recorded in state.json. Used by
``testbed link``, ``testbed validate`` and the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.emulation import BACKENDS, Backend
from testbed.errors import ConfigError, TestbedError
from testbed.model.impairment import Impairment, parse_impairment
from testbed.realize import state
from testbed.units import Duration

DIRECTIONS = ("forward", "reverse", "both")
PER_PACKET = ("loss", "jitter", "reorder", "duplicate", "corrupt")


@dataclass(frozen=True)
class LiveDirection:
    """One direction of a link of a running testbed (``sender`` -> ``receiver``)."""

    link_index: int
    link_name: str        # as the user named it
    side: str             # "forward" (a -> b in the topology) or "reverse"
    sender: str
    receiver: str
    netns: str
    ifname: str
    tag: str
    mtu: int

    @property
    def label(self) -> str:
        return f"{self.sender}->{self.receiver}"


def backend_of(data: dict[str, Any], fallback: str = "auto") -> Backend:
    """The backend instance recorded for an instance (or ``select_backend(fallback)``)."""
    name = data.get("link_backend")
    if name in BACKENDS:
        return BACKENDS[name]()
    from testbed.emulation import select_backend
    return select_backend(fallback).backend


def find_link(data: dict[str, Any], name: str) -> tuple[dict[str, Any], bool]:
    """The state's link entry named ``a-b`` (or ``b-a``: then flipped=True)."""
    for link in data["links"]:
        if name in (f"{link['a']}-{link['b']}", link.get("name")):
            return link, False
    for link in data["links"]:
        if name == f"{link['b']}-{link['a']}":
            return link, True
    names = ", ".join(f"{l['a']}-{l['b']}" for l in data["links"])
    raise TestbedError(f"no link {name!r} in testbed {data.get('instance')!r} (links: {names})")


def directions(data: dict[str, Any], name: str, direction: str = "both") -> list[LiveDirection]:
    """The directions of link ``name`` selected by ``direction`` (relative to the name)."""
    if direction not in DIRECTIONS:
        raise TestbedError(f"direction {direction!r}: choose forward, reverse or both")
    link, flipped = find_link(data, name)
    a_to_b = LiveDirection(link["index"], name, "forward", link["a"], link["b"],
                           data["nodes"][link["a"]]["netns"], link["a_ifname"],
                           data["nodes"][link["a"]]["tag"], link.get("mtu", 1500))
    b_to_a = LiveDirection(link["index"], name, "reverse", link["b"], link["a"],
                           data["nodes"][link["b"]]["netns"], link["b_ifname"],
                           data["nodes"][link["b"]]["tag"], link.get("mtu", 1500))
    as_named = [b_to_a, a_to_b] if flipped else [a_to_b, b_to_a]
    return {"forward": as_named[:1], "reverse": as_named[1:], "both": as_named}[direction]


def all_directions(data: dict[str, Any]) -> list[LiveDirection]:
    out = []
    for link in data["links"]:
        out += directions(data, f"{link['a']}-{link['b']}")
    return out


def placement(data: dict[str, Any], d: LiveDirection, backend: Backend) -> dict[str, Any]:
    """Extra ``apply`` arguments: the userspace backend delays a host's traffic at the receiver."""
    if backend.name != "userspace" or data["nodes"][d.sender]["kind"] != "host" \
            or data["nodes"][d.receiver]["kind"] != "router":
        return {}
    link = next(l for l in data["links"] if l["index"] == d.link_index)
    peer_ifname = link["b_ifname"] if d.sender == link["a"] else link["a_ifname"]
    return {"ingress": (data["nodes"][d.receiver]["netns"], peer_ifname)}


def is_emulated(data: dict[str, Any], d: LiveDirection) -> bool:
    return any(e["node"] == d.sender and e["ifname"] == d.ifname for e in data.get("emulated", []))


def configured(data: dict[str, Any], d: LiveDirection, state_dir: Path) -> Impairment | None:
    """The impairment in force as the backend recorded it (None: not emulated)."""
    from testbed.emulation.common import impairment_from_dict, read_state, state_path
    if not is_emulated(data, d):
        return None
    record = read_state(state_path(state_dir, d.netns, d.ifname))
    return None if record is None else impairment_from_dict(record["impairment"])


def show(instance: str, name: str | None = None) -> list[dict[str, Any]]:
    """Each direction (of one link, or all): configured impairment, backend, kernel view."""
    data = _read(instance)
    state_dir = state.instance_dir(instance)
    backend = backend_of(data)
    chosen = directions(data, name) if name else all_directions(data)
    out = []
    for d in chosen:
        entry: dict[str, Any] = {"link": d.link_name if name else f"{_link(data, d)}",
                                 "direction": d.label, "side": d.side,
                                 "at": f"{d.sender}:{d.ifname}", "backend": None,
                                 "configured": None, "kernel": None}
        imp = configured(data, d, state_dir)
        if imp is not None:
            entry["backend"] = backend.name
            entry["configured"] = imp.describe()
            entry["kernel"] = backend.show(d.netns, d.ifname, owner_tag=d.tag,
                                           state_dir=state_dir)
        out.append(entry)
    return out


def parse_settings(items: list[str] | dict[str, Any], where: str = "link set") -> Impairment:
    """``["delay=50ms", "loss=1%"]`` (or a mapping) -> a partial Impairment."""
    if isinstance(items, dict):
        raw = dict(items)
    else:
        raw = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"expected KEY=VALUE (e.g. delay=50ms), got {item!r}",
                                  path=where)
            raw[key.strip()] = value.strip()
    known = {"rate", "delay", "jitter", "distribution", "loss", "queue", "reorder",
             "duplicate", "corrupt"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown impairment {', '.join(unknown)}; choose from "
                          f"{', '.join(sorted(known))}", path=where)
    if not raw:
        raise ConfigError("nothing to set: give e.g. delay=50ms loss=1%", path=where)
    return parse_impairment(raw, file=None, path=where, partial=True)


def change(instance: str, name: str, imp: Impairment,
           direction: str = "both") -> list[tuple[LiveDirection, Impairment]]:
    """Merge ``imp`` into the selected directions (like ``tc qdisc change``); update state.json.

    A direction that had no emulation yet gets it applied with ``imp`` alone.
    """
    journal = state.Journal(instance)
    data = _read(instance)
    backend = backend_of(data)
    chosen = directions(data, name, direction)
    problems = [f"{d.label}: {p}" for d in chosen for p in backend.unsupported(
        (configured(data, d, journal.dir) or Impairment()).merged(imp))]
    if problems:
        raise TestbedError(f"the {backend.name} link backend cannot do: " + "; ".join(problems))
    if any(getattr(imp, key) is not None for key in PER_PACKET):
        # as ``up`` does (testbed.links.apply): per-packet impairments must not
        # meet 64 KB GSO super-packets anywhere on the path
        from testbed.emulation import set_offloads
        for node in data["nodes"].values():
            for iface in node["interfaces"]:
                set_offloads(node["netns"], iface["ifname"], False)
    done = []
    for d in chosen:
        if is_emulated(data, d):
            merged = backend.change(d.netns, d.ifname, imp, owner_tag=d.tag,
                                    state_dir=journal.dir)
        else:
            merged = imp
            backend.apply(d.netns, d.ifname, imp, owner_tag=d.tag, state_dir=journal.dir,
                          rtt_hint=_rtt_hint(data, d, journal.dir, imp), mtu=d.mtu,
                          **placement(data, d, backend))
            data.setdefault("emulated", []).append(
                {"node": d.sender, "ifname": d.ifname, "tag": d.tag, "direction": d.label})
            if not data.get("link_backend"):
                data["link_backend"] = backend.name
        link = next(l for l in data["links"] if l["index"] == d.link_index)
        link[d.side] = merged.describe()
        journal.write_state(data)
        done.append((d, merged))
    return done


def _rtt_hint(data: dict[str, Any], d: LiveDirection, state_dir: Path,
              imp: Impairment) -> Duration | None:
    """As testbed.links.rtt_hint: the link's round-trip delay, None (100 ms) without one."""
    other = [o for o in directions(data, f"{_link(data, d)}") if o.side != d.side][0]
    theirs = configured(data, other, state_dir)
    total = sum(x.delay.seconds for x in (imp, theirs) if x is not None and x.delay)
    return Duration(total) if total > 0 else None


def _link(data: dict[str, Any], d: LiveDirection) -> str:
    link = next(l for l in data["links"] if l["index"] == d.link_index)
    return f"{link['a']}-{link['b']}"


def _read(instance: str) -> dict[str, Any]:
    data = state.Journal(instance).read_state()
    if data is None:
        up = state.instances()
        raise TestbedError(f"no testbed named {instance!r} is up"
                           + (f" (up: {', '.join(up)})" if up else " (none is up)"))
    return data


def put(instance: str, d: LiveDirection, imp: Impairment | None) -> None:
    """Put exactly ``imp`` in force on one direction (None: no emulation); update state.json.

    Used to undo a change (a scheduled ``for``): unlike ``change`` it can
    take impairments away again.
    """
    from testbed.emulation.common import read_state, state_path
    journal = state.Journal(instance)
    data = _read(instance)
    backend = backend_of(data)
    link = next(l for l in data["links"] if l["index"] == d.link_index)
    if imp is None or imp.is_empty:
        backend.remove(d.netns, d.ifname, owner_tag=d.tag, state_dir=journal.dir)
        data["emulated"] = [e for e in data.get("emulated", [])
                            if not (e["node"] == d.sender and e["ifname"] == d.ifname)]
        link[d.side] = Impairment().describe()
    else:
        record = read_state(state_path(journal.dir, d.netns, d.ifname)) or {}
        rtt = record.get("rtt_hint")
        backend.apply(d.netns, d.ifname, imp, owner_tag=d.tag, state_dir=journal.dir,
                      rtt_hint=_rtt_hint(data, d, journal.dir, imp) if rtt is None else Duration(rtt),
                      mtu=record.get("mtu", d.mtu), **placement(data, d, backend))
        if not is_emulated(data, d):
            data.setdefault("emulated", []).append(
                {"node": d.sender, "ifname": d.ifname, "tag": d.tag, "direction": d.label})
        link[d.side] = imp.describe()
    journal.write_state(data)
