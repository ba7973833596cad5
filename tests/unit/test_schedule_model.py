"""Parsing the topology's ``schedule:`` list."""

import pytest

from testbed.errors import ConfigError
from testbed.model.document import Document
from testbed.model.topology import parse_topology

BASE = {
    "name": "s",
    "nodes": {"h1": {"kind": "host"}, "r1": {"kind": "router"}, "r2": {"kind": "router"}},
    "links": [{"endpoints": ["h1", "r1"]}, {"endpoints": ["r1", "r2"], "delay": "10ms"}],
}


def topo(schedule):
    return parse_topology(Document(file="t.yaml", data=dict(BASE, schedule=schedule)))


def error(schedule) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        topo(schedule)
    assert info.value.file == "t.yaml"
    return info.value


def test_entries_parse_and_sort_by_time():
    t = topo([
        {"at": "10s", "for": "2s", "link": "r1-r2", "set": {"loss": "100%"}},
        {"at": "5s", "link": "r1-r2", "set": {"rate": "10mbit"}},
        {"at": "8s", "link": "r2-r1", "set": {"delay": "80ms"}, "direction": "forward"},
    ])
    assert [e.at.seconds for e in t.schedule] == [5, 8, 10]
    assert t.schedule[0].set.rate.bps == 10e6 and t.schedule[0].set.delay is None
    assert t.schedule[1].direction == "forward" and t.schedule[1].link == "r2-r1"
    assert t.schedule[2].duration.seconds == 2 and t.schedule[2].set.loss.fraction == 1.0
    assert t.schedule[2].index == 0


def test_no_schedule_is_empty():
    assert parse_topology(Document(file="t.yaml", data=BASE)).schedule == ()


@pytest.mark.parametrize("schedule, path, words", [
    ([{"at": "1s", "link": "r1-r3", "set": {"delay": "1ms"}}], "schedule[0].link", "unknown link"),
    ([{"at": "-1s", "link": "r1-r2", "set": {"delay": "1ms"}}], "schedule[0].at", "non-negative"),
    ([{"at": "1s", "link": "r1-r2", "set": {"loss": "120%"}}], "schedule[0].set.loss", ""),
    ([{"at": "1s", "link": "r1-r2", "set": {"delya": "1ms"}}], "schedule[0].set.delya",
     "unknown impairment"),
    ([{"at": "1s", "link": "r1-r2", "set": {}}], "schedule[0].set", "non-empty"),
    ([{"at": "1s", "link": "r1-r2"}], "schedule[0]", "needs 'set'"),
    ([{"at": "1", "link": "r1-r2", "set": {"delay": "1ms"}}], "schedule[0].at", "unit"),
    ([{"at": "1s", "for": "0s", "link": "r1-r2", "set": {"delay": "1ms"}}], "schedule[0].for",
     "longer"),
    ([{"at": "1s", "link": "r1-r2", "set": {"delay": "1ms"}, "direction": "up"}],
     "schedule[0].direction", "choose forward"),
    ([{"at": "1s", "link": "r1-r2", "set": {"delay": "1ms"}, "when": 3}], "schedule[0].when",
     "unknown key"),
    ({"at": "1s"}, "schedule", "list"),
])
def test_errors_name_the_yaml_path(schedule, path, words):
    err = error(schedule)
    assert err.path == path, str(err)
    assert words in str(err)
