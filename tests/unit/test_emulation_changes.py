"""Live link changes, the pure parts: how the RTT hint follows a delay change, and what
the scheduler records about a late change."""

from __future__ import annotations

import time

import pytest

from testbed.emulation import netem, userspace
from testbed.emulation.common import delay_shift, shift_rtt
from testbed.model.document import Document
from testbed.model.impairment import Impairment, parse_impairment
from testbed.model.topology import parse_topology
from testbed.emulation.scheduler import LATE_S, Scheduler
from testbed.units import Duration


def imp(**kw) -> Impairment:
    return parse_impairment(kw, file=None, path="t")


def test_rtt_hint_follows_a_delay_change_as_a_fresh_plan_would():
    # 100 Mbit/s, queue 1 BDP, 20 ms each way: a 40 ms round trip, 500000 b
    link = imp(rate="100mbit", delay="20ms", queue="1bdp")
    rtt = Duration(0.04)
    assert userspace.resolve(link, rtt, 1500).tbf.limit == 500_000
    # ``link set delay=50ms`` on both directions: the round trip grows by 2 x 30 ms
    changed = link.merged(parse_impairment({"delay": "50ms"}, file=None, path="t",
                                           partial=True))
    shift = delay_shift(link, changed) * 2
    new_rtt = shift_rtt(rtt, shift)
    assert new_rtt.seconds == pytest.approx(0.1)
    fresh = userspace.resolve(changed, Duration(0.05 + 0.05), 1500).tbf.limit
    assert fresh == 1_250_000
    assert userspace.resolve(changed, new_rtt, 1500).tbf.limit == fresh
    assert netem.resolve(changed, new_rtt, 1500).tbf.limit == fresh
    # one direction only: 20 + 50 ms
    assert shift_rtt(rtt, delay_shift(link, changed)).seconds == pytest.approx(0.07)


def test_rtt_hint_without_delay_is_none_both_ways():
    assert delay_shift(None, imp(delay="50ms")) == pytest.approx(0.05)
    assert delay_shift(imp(delay="5ms"), imp(rate="1mbit")) == pytest.approx(-0.005)
    assert shift_rtt(None, 0.05).seconds == pytest.approx(0.05)   # the link gets a delay
    assert shift_rtt(Duration(0.04), -0.04) is None              # ... or loses all of it
    assert shift_rtt(None, 0.0) is None
    assert shift_rtt(Duration(0.04), 0.0) == Duration(0.04)


TOPO = {
    "name": "s",
    "nodes": {"a": {"kind": "host"}, "b": {"kind": "host"}},
    "links": [{"endpoints": ["a", "b"], "delay": "1ms"}],
    "schedule": [{"at": "0s", "for": "0.05s", "link": "a-b", "set": {"loss": "100%"}}],
}


def test_a_change_in_force_late_is_flagged(monkeypatch):
    """The record says how late each action was in force, and flags it past LATE_S."""
    slow = LATE_S + 0.15

    def change(instance, name, imp, direction, notes):
        time.sleep(slow)            # e.g. a delay daemon's start-up
        notes.append("a-b: started a delay daemon")
        return []

    monkeypatch.setattr("testbed.emulation.scheduler.live.change", change)
    monkeypatch.setattr("testbed.emulation.scheduler.live.read", lambda instance: None)
    monkeypatch.setattr("testbed.emulation.scheduler.live.directions",
                        lambda deployed, link, direction: [])
    sched = Scheduler("nobody", parse_topology(Document(file="t", data=TOPO)).schedule)
    sched.start()
    deadline = time.monotonic() + 10
    while len(sched.events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    set_, revert = sched.stop()
    assert set_["late"] is True and set_["late_s"] >= slow - 0.01, set_
    assert set_["notes"] == ["a-b: started a delay daemon"]
    assert set_["at_s"] >= set_["started_s"] + slow - 0.01
    # the revert was due at 0.05 s but could only start after the slow set
    assert revert["late"] is True and revert["planned_s"] == 0.05
    assert revert["error"] is None and revert["notes"] == []
