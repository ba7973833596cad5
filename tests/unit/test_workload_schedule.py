"""``schedule:`` in a workload: accepted, then checked against the topology's links with
errors that name the workload file and the entry; a note for a flow on a router."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.model.document import load
from testbed.model.topology import parse_topology
from testbed.workload import load_workload

REPO = Path(__file__).resolve().parents[2]
DUMBBELL = REPO / "topologies" / "dumbbell.yaml"


def load_topology(path: Path):
    return parse_topology(load(path))


def workload(tmp_path: Path, schedule: str) -> Path:
    p = tmp_path / "wl.yaml"
    p.write_text(f"name: wl\ntopology: {DUMBBELL}\nflows: [{{from: h1, to: h3}}]\n"
                 f"schedule:\n{schedule}")
    return p


def test_a_workload_schedule_is_read_and_checked_against_the_topology(tmp_path):
    wl = load_workload(workload(tmp_path, "  - {at: 2s, for: 1s, link: r1-r2, set: {loss: 100%}}\n"))
    links = load_topology(DUMBBELL).links
    (entry,) = wl.schedule_entries(links)
    assert entry.at.seconds == 2.0 and entry.link == "r1-r2" and entry.index == 0
    assert wl.schedule_entries(links, first_index=3)[0].index == 3    # after the topology's
    assert load_workload(workload(tmp_path, "  []\n")).schedule_entries(links) == ()


def test_a_workload_schedule_naming_no_link_says_where(tmp_path):
    path = workload(tmp_path, "  - {at: 2s, link: r1-r9, set: {loss: 100%}}\n")
    with pytest.raises(ConfigError) as info:
        load_workload(path).schedule_entries(load_topology(DUMBBELL).links)
    assert info.value.file == str(path) and info.value.path == "schedule[0].link"
    assert "unknown link 'r1-r9'" in info.value.message and info.value.line == 5


def test_a_workload_schedule_that_is_not_a_list_is_refused_at_load(tmp_path):
    with pytest.raises(ConfigError, match="schedule must be a list"):
        load_workload(workload(tmp_path, "  at: 2s\n"))


def test_a_router_as_a_flows_end_gets_a_note(tmp_path):
    p = tmp_path / "wl.yaml"
    p.write_text(f"name: wl\ntopology: {DUMBBELL}\nflows: [{{from: r1, to: h3}}, {{from: h1, to: h4}}]\n")
    kinds = {name: node.kind for name, node in load_topology(DUMBBELL).nodes.items()}
    (note,) = load_workload(p).router_notes(kinds)
    assert note.startswith("wl.yaml: flows[0].from: r1 is a router") and "h1, h2, h3, h4" in note
