"""Emulated links of a testbed that is up: find them by name, show them, change them.

A link is named ``<a>-<b>`` as in the topology (``b-a`` is accepted too;
then ``forward`` means b -> a, i.e. the direction as named). Each direction
lives where the backend recorded in state.json put it (``Deployed.emulated``).
Used by ``testbed link``, ``testbed validate``, ``status``, a run's recorded
conditions and the scheduler.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from testbed.emulation import BACKENDS, Backend, links
from testbed.errors import ConfigError, TestbedError
from testbed.model.document import parse_yaml
from testbed.model.impairment import (IMPAIRMENT_KEYS, Impairment, aqm_problems,
                                      parse_impairment, round_trip)
from testbed.model.limits import kernel_limit_problems
from testbed.plan.deployed import Deployed, EmulatedDirection
from testbed.plan.types import PlannedDirection, PlannedLink
from testbed.realize import state
from testbed.units import Duration

DIRECTIONS = ("forward", "reverse", "both")


def backend_of(deployed: Deployed, fallback: str = "auto") -> Backend:
    """The backend instance recorded for an instance (or ``select_backend(fallback)``)."""
    if deployed.link_backend in BACKENDS:
        return BACKENDS[deployed.link_backend]()
    from testbed.emulation import select_backend
    return select_backend(fallback).backend


def find_link(deployed: Deployed, name: str) -> tuple[PlannedLink, bool]:
    """The link named ``a-b`` (or ``b-a``: then flipped=True)."""
    for link in deployed.links:
        if name == link.name:
            return link, False
    for link in deployed.links:
        if name == f"{link.b}-{link.a}":
            return link, True
    names = ", ".join(l.name for l in deployed.links)
    raise TestbedError(f"no link {name!r} in testbed {deployed.instance!r} (links: {names})")


def directions(deployed: Deployed, name: str, direction: str = "both") -> list[PlannedDirection]:
    """The directions of link ``name`` selected by ``direction`` (relative to the name)."""
    if direction not in DIRECTIONS:
        raise TestbedError(f"direction {direction!r}: choose forward, reverse or both")
    link, flipped = find_link(deployed, name)
    as_named = list(reversed(link.directions)) if flipped else list(link.directions)
    return {"forward": as_named[:1], "reverse": as_named[1:], "both": as_named}[direction]


def is_emulated(deployed: Deployed, d: PlannedDirection) -> bool:
    return deployed.emulation(d) is not None


def configured(deployed: Deployed, d: PlannedDirection, state_dir: Path) -> Impairment | None:
    """The impairment in force as the backend recorded it (None: not emulated)."""
    from testbed.emulation.common import read_state, state_path
    e = deployed.emulation(d)
    if e is None:
        return None
    record = read_state(state_path(state_dir, e.netns, e.ifname))
    return None if record is None else Impairment.from_fields(record["impairment"])


def show(instance: str, name: str | None = None) -> list[dict[str, Any]]:
    """Each direction (of one link, or all): configured impairment, backend, kernel view."""
    deployed = read(instance)
    state_dir = state.instance_dir(instance)
    backend = backend_of(deployed)
    chosen = directions(deployed, name) if name else deployed.directions
    out = []
    for d in chosen:
        entry: dict[str, Any] = {"link": name or d.link.name, "direction": d.label,
                                 "side": d.side, "at": f"{d.sender}:{d.ifname}",
                                 "backend": None, "configured": None, "kernel": None}
        imp = configured(deployed, d, state_dir)
        e = deployed.emulation(d)
        if imp is not None and e is not None:
            entry["backend"] = backend.name
            entry["configured"] = imp.describe()
            entry["fields"] = imp.as_fields()
            entry["kernel"] = backend.show(e.netns, e.ifname, owner_tag=e.tag,
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
            raw[key.strip()] = _value(key.strip(), value.strip(), where)
    known = set(IMPAIRMENT_KEYS)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown impairment {', '.join(unknown)}; choose from "
                          f"{', '.join(sorted(known))}", path=where)
    if not raw:
        raise ConfigError("nothing to set: give e.g. delay=50ms loss=1%", path=where)
    return parse_impairment(raw, file=None, path=where, partial=True)


def _value(key: str, text: str, where: str) -> Any:
    """A setting's value: text, except ``aqm={kind: codel, target: 2ms}``, a YAML mapping
    (the discipline with its parameters, as a topology file writes it)."""
    if key != "aqm" or not text.startswith("{"):
        return text
    try:
        data, _ = parse_yaml(text, where)
    except ConfigError as exc:
        raise ConfigError(f"aqm: {exc.message}", path=where) from None
    return data


def change(instance: str, name: str, imp: Impairment, direction: str = "both",
           notes: list[str] | None = None) -> list[tuple[PlannedDirection, Impairment]]:
    """Merge ``imp`` into the selected directions (like ``tc qdisc change``); update state.json.

    A direction that had no emulation yet gets it applied with ``imp`` alone.
    What a change had to do beyond that (a tbf queue dropped because its
    burst shrank, a link engine lane added) is appended to ``notes`` as
    ``"<direction>: <note>"``; without a list it goes to stderr, never
    nowhere.
    """
    with state.Journal(instance).changing():
        deployed = read(instance)
        targets = [(d, imp, False) for d in directions(deployed, name, direction)]
        return _set(instance, deployed, targets, notes)


def put(instance: str, targets: list[tuple[PlannedDirection, Impairment | None]],
        notes: list[str] | None = None) -> None:
    """Put exactly the given impairments in force (None: no emulation); update state.json.

    Used to undo a change (a scheduled ``for``): unlike ``change`` it can
    take impairments away again. Like ``change`` it works in place: a
    running link engine lane is reconfigured, not restarted. All ``targets``
    belong to one link.
    """
    with state.Journal(instance).changing():
        _set(instance, read(instance), [(d, imp or Impairment(), True) for d, imp in targets],
             notes)


Target = tuple[PlannedDirection, Impairment, bool]


def _set(instance: str, deployed: Deployed, targets: list[Target],
         notes: list[str] | None) -> list[tuple[PlannedDirection, Impairment]]:
    """Change directions of one link: ``(direction, impairment, exact)``; exact replaces.

    Both directions' buffers given in BDP follow the link's new round trip
    (``common.shift_rtt``): a delay change resizes them as a fresh plan would.
    """
    from testbed.emulation.common import delay_shift
    journal = state.Journal(instance)
    backend = backend_of(deployed)
    link_dirs = deployed.link(targets[0][0].link.index).directions
    before = {d.side: configured(deployed, d, journal.dir) for d in link_dirs}
    after = _after(backend, before, targets)
    if any(imp.acts_per_packet for _d, imp, _exact in targets):
        _offloads_off(deployed)
    shift = sum(delay_shift(before[side], after[side]) for side in before)
    chosen = {d.side for d, _imp, _exact in targets}
    said = _resize(deployed, backend, [d for d in link_dirs if d.side not in chosen], shift,
                   journal.dir)
    done = []
    for d, imp, exact in targets:
        deployed, new, more = _set_one(deployed, backend, d, (imp, exact, after[d.side]),
                                       shift, _rtt_hint(after), journal.dir)
        said += more
        journal.write_deployed(deployed)
        done.append((d, new))
    if notes is not None:
        notes += said
    else:
        for note in said:
            print(f"testbed: note: {note}", file=sys.stderr)
    return done


def _after(backend: Backend, before: dict[str, Impairment | None],
           targets: list[Target]) -> dict[str, Impairment | None]:
    """Each side's impairment after the change; refused if the backend cannot do it."""
    after = dict(before)
    for d, imp, exact in targets:
        after[d.side] = imp if exact else (before[d.side] or Impairment()).merged(imp)
    rtt = _rtt_hint(after)
    incoherent = [f"{d.label}: {why}" for d, _imp, _exact in targets if after[d.side] is not None
                  for _key, why in aqm_problems(after[d.side])]
    if incoherent:
        raise ConfigError("; ".join(incoherent))
    beyond = [f"{d.label}: {p}" for d, _imp, _exact in targets if after[d.side] is not None
              for _key, p in kernel_limit_problems(after[d.side], rtt, d.link.mtu)]
    if beyond:
        raise ConfigError("; ".join(beyond))
    problems = [f"{d.label}: {p}" for d, _imp, _exact in targets
                for p in backend.unsupported(after[d.side])]
    if problems:
        raise TestbedError(f"the {backend.name} link backend cannot do: " + "; ".join(problems))
    return after


def _offloads_off(deployed: Deployed) -> None:
    """As ``up`` does (testbed.emulation.links.apply): per-packet impairments must not
    meet 64 KB GSO super-packets anywhere on the path."""
    from testbed.emulation import set_offloads
    for node in deployed.nodes.values():
        for iface in node.interfaces:
            set_offloads(node.netns, iface.ifname, False)


def _resize(deployed: Deployed, backend: Backend, others: list[PlannedDirection],
            shift: float, state_dir: Path) -> list[str]:
    """The round trip changed by ``shift`` s: resize the other directions' BDP buffers."""
    said: list[str] = []
    for d in others:
        e = deployed.emulation(d)
        if shift and e is not None:
            backend.change(e.netns, e.ifname, Impairment(), owner_tag=e.tag,
                           state_dir=state_dir, rtt_shift=shift)
            said += _notes_of(d, e, state_dir)
    return said


def _set_one(deployed: Deployed, backend: Backend, d: PlannedDirection,
             change: tuple[Impairment, bool, Impairment], shift: float,
             rtt: Duration | None, state_dir: Path) -> tuple[Deployed, Impairment, list[str]]:
    """One direction: ``change`` is (what to set, exact, the result wanted). Returns the
    testbed after it, what is in force, and what the backend had to do besides."""
    imp, exact, new = change
    e = deployed.emulation(d)
    if new.is_empty:
        if e is not None:
            backend.remove(e.netns, e.ifname, owner_tag=e.tag, state_dir=state_dir)
        return deployed.with_direction(d, new, None, None), new, []
    if e is not None:
        new = backend.change(e.netns, e.ifname, imp, owner_tag=e.tag, state_dir=state_dir,
                             exact=exact, rtt_shift=shift)
        return deployed.with_direction(d, new, e, None), new, _notes_of(d, e, state_dir)
    e = links.emulated(backend.name, d, deployed.nodes)
    links.apply_direction(backend, e, new, state_dir, rtt, d.link.mtu)
    return deployed.with_direction(d, new, e, backend.name), new, []


def _notes_of(d: PlannedDirection, e: EmulatedDirection, state_dir: Path) -> list[str]:
    from testbed.emulation.common import read_state, state_path
    record = read_state(state_path(state_dir, e.netns, e.ifname))
    return [f"{d.label}: {n}" for n in (record or {}).get("notes") or []]


def _rtt_hint(after: dict[str, Impairment | None]) -> Duration | None:
    """As testbed.emulation.links.rtt_hint: the link's round-trip delay, None (100 ms) without one."""
    return round_trip(*after.values())


def read(instance: str) -> Deployed:
    """The running testbed named ``instance``; a TestbedError when none is up."""
    deployed = state.Journal(instance).read_deployed()
    if deployed is None:
        up = state.instances()
        raise TestbedError(f"no testbed named {instance!r} is up"
                           + (f" (up: {', '.join(up)})" if up else " (none is up)"))
    return deployed
