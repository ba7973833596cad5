"""Carry out a topology's ``schedule:`` on a running testbed (testbed.model.schedule).

    sched = Scheduler(instance, topology.schedule)
    sched.start(t0)          # t0: time.monotonic() when flows start
    ...
    events = sched.stop()    # what was done, when (also ``sched.events``)

One thread; each entry is applied at ``t0 + at`` with the backend's
``change`` (merged into what is in force, like ``tc qdisc change``); an
entry with ``for`` puts back exactly what was in force before it, after
that long. Both work in place (a link engine lane is reconfigured, a
tbf changed): a few milliseconds on an idle machine.

Every action is recorded with its planned offset (``planned_s``), when it
began (``started_s``) and when it was in force (``at_s``), how late that
was (``late_s``) and ``late: true`` beyond ``LATE_S`` (e.g. a change that
had to start the link engine: a Python start-up, up to seconds on a loaded
machine), with what the backend had to do besides (``notes``: a dropped
tbf queue, a lane added to the engine). A failed action is recorded with its error
(``errors``) and the rest still run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from testbed.emulation import live
from testbed.errors import TestbedError
from testbed.model.impairment import Impairment
from testbed.model.schedule import ScheduleEntry
from testbed.plan.types import PlannedDirection
from testbed.realize import state

# an action in force more than this after its planned time is flagged ``late``:
# ten times what an in-place change takes on an idle machine, and well
# below the second-scale steps a schedule is written in
LATE_S = 0.1


@dataclass(frozen=True)
class _Action:
    offset: float
    order: int
    entry: ScheduleEntry
    revert: bool


class Scheduler:
    """Applies scheduled link changes at their times, in a thread."""

    def __init__(self, instance: str, entries: Sequence[ScheduleEntry]) -> None:
        self.instance = instance
        self.entries = tuple(entries)
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._before: dict[int, list[tuple[PlannedDirection, Impairment | None]]] = {}
        self.t0: float | None = None

    @classmethod
    def for_network(cls, net: Any) -> "Scheduler":
        """The schedule of the topology a running testbed was brought up from (may be empty)."""
        return cls(net.name, net.deployed.schedule)

    @property
    def errors(self) -> list[str]:
        return [e["error"] for e in self.events if e.get("error")]

    def actions(self) -> list[_Action]:
        out = []
        for i, e in enumerate(self.entries):
            out.append(_Action(e.at.seconds, 2 * i, e, False))
            if e.duration is not None:
                out.append(_Action(e.at.seconds + e.duration.seconds, 2 * i + 1, e, True))
        return sorted(out, key=lambda a: (a.offset, a.order))

    def start(self, t0: float | None = None) -> None:
        if self._thread is not None:
            raise TestbedError("the link schedule was already started")
        self.t0 = time.monotonic() if t0 is None else t0
        if not self.entries:
            return
        self._thread = threading.Thread(target=self._run, name="link-schedule", daemon=True)
        self._thread.start()

    def stop(self) -> list[dict[str, Any]]:
        """Stop (actions not yet due are skipped and recorded as such); the events."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return list(self.events)

    def _run(self) -> None:
        assert self.t0 is not None
        pending = self.actions()
        while pending:
            wait = self.t0 + pending[0].offset - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            self._do(pending.pop(0))
        for action in pending:
            self.events.append(self._event(action, skipped=True))

    def _event(self, action: _Action, **extra: Any) -> dict[str, Any]:
        e = action.entry
        return {"entry": e.index, "action": "revert" if action.revert else "set",
                "link": e.link, "direction": e.direction, "set": e.set.describe(),
                "planned_s": action.offset, **extra}

    def _do(self, action: _Action) -> None:
        assert self.t0 is not None
        e = action.entry
        done: list[str] = []
        notes: list[str] = []
        error = None
        started = time.time()
        started_s = time.monotonic() - self.t0
        try:
            if not action.revert:
                if e.duration is not None:
                    deployed = live.read(self.instance)
                    self._before[e.index] = [
                        (d, live.configured(deployed, d, state.instance_dir(self.instance)))
                        for d in live.directions(deployed, e.link, e.direction)]
                for d, merged in live.change(self.instance, e.link, e.set, e.direction,
                                             notes=notes):
                    done.append(f"{d.label}: {merged.describe()}")
            else:
                before = self._before.pop(e.index, [])
                if before:
                    live.put(self.instance, before, notes=notes)
                done += [f"{d.label}: {imp.describe() if imp else 'none'}" for d, imp in before]
        except (TestbedError, OSError) as exc:
            error = str(exc)
        at_s = time.monotonic() - self.t0
        late_s = max(0.0, at_s - action.offset)
        self.events.append(self._event(action, started_s=round(started_s, 4),
                                       at_s=round(at_s, 4), late_s=round(late_s, 4),
                                       late=late_s > LATE_S, started_wall=started,
                                       wall=time.time(), result=done, notes=notes,
                                       error=error))
