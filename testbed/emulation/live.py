"""Emulated links of a testbed that is up: find them by name, show them, change them.

A link is named ``<a>-<b>`` as in the topology (``b-a`` is accepted too;
then ``forward`` means b -> a, i.e. the direction as named). Each direction
lives at its sender's egress, in the backend recorded in state.json. Used by
``testbed link``, ``testbed validate`` and the scheduler.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.emulation import BACKENDS, Backend
from testbed.errors import ConfigError, TestbedError
from testbed.model.impairment import Impairment, parse_impairment, round_trip
from testbed.model.limits import kernel_limit_problems
from testbed.realize import state
from testbed.units import Duration

DIRECTIONS = ("forward", "reverse", "both")


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
            entry["fields"] = imp.as_fields()
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


def change(instance: str, name: str, imp: Impairment, direction: str = "both",
           notes: list[str] | None = None) -> list[tuple[LiveDirection, Impairment]]:
    """Merge ``imp`` into the selected directions (like ``tc qdisc change``); update state.json.

    A direction that had no emulation yet gets it applied with ``imp`` alone.
    What a change had to do beyond that (a tbf queue dropped because its
    burst shrank, a delay daemon started) is appended to ``notes`` as
    ``"<direction>: <note>"``; without a list it goes to stderr, never
    nowhere.
    """
    with state.Journal(instance).changing():
        data = _read(instance)
        targets = [(d, imp, False) for d in directions(data, name, direction)]
        return _set(instance, data, targets, notes)


def put(instance: str, targets: list[tuple[LiveDirection, Impairment | None]],
        notes: list[str] | None = None) -> None:
    """Put exactly the given impairments in force (None: no emulation); update state.json.

    Used to undo a change (a scheduled ``for``): unlike ``change`` it can
    take impairments away again. Like ``change`` it works in place: a
    running delay daemon is reconfigured, not restarted. All ``targets``
    belong to one link.
    """
    with state.Journal(instance).changing():
        _set(instance, _read(instance), [(d, imp or Impairment(), True) for d, imp in targets],
             notes)


def _set(instance: str, data: dict[str, Any],
         targets: list[tuple[LiveDirection, Impairment, bool]],
         notes: list[str] | None) -> list[tuple[LiveDirection, Impairment]]:
    """Change directions of one link: ``(direction, impairment, exact)``; exact replaces.

    Both directions' buffers given in BDP follow the link's new round trip
    (``common.shift_rtt``): a delay change resizes them as a fresh plan would.
    """
    from testbed.emulation.common import delay_shift, read_state, state_path
    journal = state.Journal(instance)
    backend = backend_of(data)
    link_dirs = directions(data, _link(data, targets[0][0]))
    before = {d.side: configured(data, d, journal.dir) for d in link_dirs}
    after = dict(before)
    for d, imp, exact in targets:
        after[d.side] = imp if exact else (before[d.side] or Impairment()).merged(imp)
    rtt = _rtt_hint(after)
    beyond = [f"{d.label}: {p}" for d in link_dirs if after[d.side] is not None
              for _key, p in kernel_limit_problems(after[d.side], rtt, d.mtu)]
    if beyond:
        raise ConfigError("; ".join(beyond))
    problems = [f"{d.label}: {p}" for d, _imp, _exact in targets
                for p in backend.unsupported(after[d.side])]
    if problems:
        raise TestbedError(f"the {backend.name} link backend cannot do: " + "; ".join(problems))
    if any(imp.acts_per_packet for _d, imp, _exact in targets):
        # as ``up`` does (testbed.emulation.links.apply): per-packet impairments must not
        # meet 64 KB GSO super-packets anywhere on the path
        from testbed.emulation import set_offloads
        for node in data["nodes"].values():
            for iface in node["interfaces"]:
                set_offloads(node["netns"], iface["ifname"], False)
    shift = sum(delay_shift(before[side], after[side]) for side in before)
    link = next(l for l in data["links"] if l["index"] == link_dirs[0].link_index)
    chosen = {d.side: d for d, _imp, _exact in targets}
    others = [d for d in link_dirs if d.side not in chosen]
    said: list[str] = []
    for d in others:
        if shift and is_emulated(data, d):   # the round trip changed: resize its buffer
            backend.change(d.netns, d.ifname, Impairment(), owner_tag=d.tag,
                           state_dir=journal.dir, rtt_shift=shift)
            said += _notes_of(d, read_state(state_path(journal.dir, d.netns, d.ifname)))
    done = []
    for d, imp, exact in targets:
        new = after[d.side]
        if new.is_empty:
            if is_emulated(data, d):
                backend.remove(d.netns, d.ifname, owner_tag=d.tag, state_dir=journal.dir)
            data["emulated"] = [e for e in data.get("emulated", [])
                                if not (e["node"] == d.sender and e["ifname"] == d.ifname)]
        elif is_emulated(data, d):
            new = backend.change(d.netns, d.ifname, imp, owner_tag=d.tag, state_dir=journal.dir,
                                 exact=exact, rtt_shift=shift)
            said += _notes_of(d, read_state(state_path(journal.dir, d.netns, d.ifname)))
        else:
            backend.apply(d.netns, d.ifname, new, owner_tag=d.tag, state_dir=journal.dir,
                          rtt_hint=_rtt_hint(after), mtu=d.mtu, **placement(data, d, backend))
            data.setdefault("emulated", []).append(
                {"node": d.sender, "ifname": d.ifname, "tag": d.tag, "direction": d.label})
            if not data.get("link_backend"):
                data["link_backend"] = backend.name
        link[d.side] = new.describe()
        journal.write_state(data)
        done.append((d, new))
    if notes is not None:
        notes += said
    else:
        for note in said:
            print(f"testbed: note: {note}", file=sys.stderr)
    return done


def _notes_of(d: LiveDirection, record: dict[str, Any] | None) -> list[str]:
    return [f"{d.label}: {n}" for n in (record or {}).get("notes") or []]


def _rtt_hint(after: dict[str, Impairment | None]) -> Duration | None:
    """As testbed.emulation.links.rtt_hint: the link's round-trip delay, None (100 ms) without one."""
    return round_trip(*after.values())


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
