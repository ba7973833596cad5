"""Run-time changes of emulated links: the topology's ``schedule:`` list (pure data).

    schedule:
      - {at: 5s, link: r1-r2, set: {rate: 10mbit}}                  # a step
      - {at: 8s, link: r1-r2, set: {delay: 80ms}, direction: forward}
      - {at: 10s, for: 2s, link: r1-r2, set: {loss: 100%}}          # then back

``at`` is relative to the moment flows start. ``link`` names a link of the
topology as ``a-b`` (or ``b-a``; ``direction`` is then relative to the name).
``set`` holds impairment keys, merged into what is in force (like ``tc
qdisc change``). With ``for``, the keys ``set`` changed are put back to
what was in force before, after that long. Errors name the file and the
YAML path (``schedule[2].set.loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from testbed.model.document import Document
from testbed.model.impairment import IMPAIRMENT_KEYS, Impairment, parse_impairment, round_trip
from testbed.model.limits import kernel_limit_problems
from testbed.units import Duration, UnitError

ENTRY_KEYS = {"at", "for", "link", "set", "direction"}
DIRECTIONS = ("forward", "reverse", "both")


@dataclass(frozen=True)
class ScheduleEntry:
    at: Duration
    link: str                  # as written: "a-b" or "b-a"
    set: Impairment            # partial: only the keys to change
    direction: str = "both"    # relative to ``link`` as written
    duration: Duration | None = None   # ``for``: revert after this long
    index: int = 0             # position in the file's list


def _link_names(links: Sequence[Any]) -> set[str]:
    names = set()
    for link in links:
        names.add(f"{link.a.node}-{link.b.node}")
        names.add(f"{link.b.node}-{link.a.node}")
    return names


def parse_schedule(doc: Document, raw: Any, links: Sequence[Any]) -> tuple[ScheduleEntry, ...]:
    """Validate ``raw`` (the value of ``schedule:``) against the topology's links."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise doc.error("schedule", "schedule must be a list of {at, link, set} entries")
    known = _link_names(links)
    out = []
    for i, entry in enumerate(raw):
        where = f"schedule[{i}]"
        if not isinstance(entry, dict):
            raise doc.error(where, "each schedule entry is a mapping like "
                            "{at: 5s, link: r1-r2, set: {delay: 50ms}}")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise doc.error(f"{where}.{unknown[0]}", f"unknown key {unknown[0]!r}; a schedule "
                            f"entry has {', '.join(sorted(ENTRY_KEYS))}")
        for key in ("at", "link", "set"):
            if key not in entry:
                raise doc.error(where, f"a schedule entry needs {key!r}")
        at = _duration(doc, entry["at"], f"{where}.at")
        duration = None
        if entry.get("for") is not None:
            duration = _duration(doc, entry["for"], f"{where}.for")
            if duration.seconds <= 0:
                raise doc.error(f"{where}.for", "'for' must be longer than 0 s")
        link = entry["link"]
        if not isinstance(link, str) or link not in known:
            choices = ", ".join(sorted(f"{l.a.node}-{l.b.node}" for l in links)) or "none"
            raise doc.error(f"{where}.link", f"unknown link {link!r} (links: {choices})")
        direction = entry.get("direction", "both")
        if direction not in DIRECTIONS:
            raise doc.error(f"{where}.direction", f"direction {direction!r}: choose forward, "
                            "reverse or both")
        settings = entry["set"]
        if not isinstance(settings, dict) or not settings:
            raise doc.error(f"{where}.set", "'set' is a non-empty mapping of impairments, "
                            "e.g. {delay: 50ms, loss: 1%}")
        bad = sorted(set(settings) - set(IMPAIRMENT_KEYS))
        if bad:
            raise doc.error(f"{where}.set.{bad[0]}", f"unknown impairment {bad[0]!r}; choose "
                            f"from {', '.join(sorted(IMPAIRMENT_KEYS))}")
        nulls = sorted(k for k, v in settings.items() if v is None)
        if nulls:
            raise doc.error(f"{where}.set.{nulls[0]}", "a schedule sets values; it cannot "
                            "remove an impairment")
        imp = parse_impairment(settings, file=doc.file, path=f"{where}.set", partial=True)
        out.append(ScheduleEntry(at=at, link=link, set=imp, direction=direction,
                                 duration=duration, index=i))
    entries = tuple(sorted(out, key=lambda e: (e.at.seconds, e.index)))
    _check_kernel_limits(doc, entries, links)
    return entries


def _check_kernel_limits(doc: Document, entries: Sequence[ScheduleEntry],
                         links: Sequence[Any]) -> None:
    """Each entry, merged in time order into what the links start with, must still fit what
    the kernel is sent (model/limits.py). (A ``for`` puts back a state already checked.)"""
    state = {l.index: [l.forward, l.reverse] for l in links}
    for e in entries:
        link, flipped = _find_link(links, e.link)
        sides = {"forward": [0], "reverse": [1], "both": [0, 1]}[e.direction]
        for side in ([1 - side for side in sides] if flipped else sides):
            state[link.index][side] = state[link.index][side].merged(e.set)
        rtt = round_trip(*state[link.index])
        for side, (sender, receiver) in enumerate(((link.a, link.b), (link.b, link.a))):
            for _key, problem in kernel_limit_problems(state[link.index][side], rtt, link.mtu):
                raise doc.error(f"schedule[{e.index}].set", f"{sender.node}->{receiver.node} "
                                f"from {e.at}: {problem}")


def _find_link(links: Sequence[Any], name: str) -> tuple[Any, bool]:
    """The link named ``a-b`` (flipped=False) or else ``b-a`` (True), as the live change
    that carries out the entry finds it (emulation.live.find_link)."""
    for link in links:
        if name == f"{link.a.node}-{link.b.node}":
            return link, False
    return next(l for l in links if name == f"{l.b.node}-{l.a.node}"), True


def _duration(doc: Document, value: Any, path: str) -> Duration:
    try:
        return Duration.parse(value)
    except UnitError as exc:
        raise doc.error(path, str(exc)) from None
