"""The Scheduler's timeline (no kernel: actions that are never due are only recorded)."""

from testbed.model.document import Document
from testbed.model.topology import parse_topology
from testbed.emulation.scheduler import Scheduler

TOPO = {
    "name": "s",
    "nodes": {"a": {"kind": "host"}, "b": {"kind": "host"}},
    "links": [{"endpoints": ["a", "b"], "delay": "1ms"}],
    "schedule": [
        {"at": "10s", "for": "2s", "link": "a-b", "set": {"loss": "100%"}},
        {"at": "5s", "link": "b-a", "set": {"rate": "10mbit"}, "direction": "forward"},
        {"at": "11s", "link": "a-b", "set": {"delay": "5ms"}},
    ],
}


def test_actions_in_time_order_with_reverts():
    sched = Scheduler("nobody", parse_topology(Document(file="t", data=TOPO)).schedule)
    plan = [(a.offset, a.entry.index, a.revert) for a in sched.actions()]
    assert plan == [(5.0, 1, False), (10.0, 0, False), (11.0, 2, False), (12.0, 0, True)]


def test_stop_before_anything_is_due_records_skips():
    sched = Scheduler("nobody", parse_topology(Document(file="t", data=TOPO)).schedule)
    sched.start()
    events = sched.stop()
    assert [e["skipped"] for e in events] == [True] * 4
    assert sched.errors == []


def test_empty_schedule_starts_no_thread():
    data = dict(TOPO)
    del data["schedule"]
    sched = Scheduler("nobody", parse_topology(Document(file="t", data=data)).schedule)
    sched.start()
    assert sched.stop() == []
