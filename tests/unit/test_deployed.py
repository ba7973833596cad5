"""A running testbed as one typed value (Deployed): state.json is it, written down.

Pure: planned topologies, no kernel. state-v1.json in tests/data is a
state.json as testbed wrote it before state version 2 (the code of commit
da47f67, network.build, for a dumbbell on the userspace backend).
"""

import json
from pathlib import Path

import pytest

from testbed.emulation import links, live
from testbed.errors import TestbedError
from testbed.instance import status
from testbed.instance.network import load_topology
from testbed.plan.deployed import STATE_VERSION, Deployed, Place
from testbed.plan.planner import make_plan
from testbed.realize import state

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "tests" / "data" / "state-v1.json"


def deployed(topology: str, variables: dict, backend: str = "userspace") -> Deployed:
    plan = make_plan(load_topology(ROOT / "topologies" / topology, variables), "dp")
    emulated = tuple(links.emulated(backend, d, plan.nodes) for d in links.directions(plan))
    return Deployed.of(plan, cc_in_force={n: "cubic" for n in plan.nodes}, host_changes=("bbr",),
                       link_backend=backend, link_backend_reason="asked for", emulated=emulated,
                       notes=("offloads off",))


def through_json(d: Deployed) -> Deployed:
    """As state.json holds it: written with sorted keys, read back."""
    return Deployed.from_dict(json.loads(json.dumps(d.to_dict(), indent=1, sort_keys=True)))


@pytest.mark.parametrize("topology, variables", [
    ("dumbbell.yaml", {"loss": "1%", "queue": "1.5bdp"}),
    ("dumbbell.yaml", {"loss": "0%"}),
    ("line.yaml", {"routers": 5, "hop_delay": "5ms", "hop_rate": "10mbit"}),
])
def test_a_planned_testbed_reads_back_equal(topology, variables):
    d = deployed(topology, variables)
    again = through_json(d)
    assert again == d
    assert list(again.nodes) == list(d.nodes)           # the topology's order, not sorted
    assert again.nodes["r1"].sysctls == d.nodes["r1"].sysctls
    assert again.to_dict() == d.to_dict()


def test_impairments_and_schedule_are_typed_not_text(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nnodes: {h1: {kind: host}, r1: {kind: router}}\n"
                    "links: [{endpoints: [h1, r1], rate: 10mbit, loss: {p: 1%, r: 10%}}]\n"
                    "schedule:\n  - {at: 2s, for: 1s, link: r1-h1, set: {delay: 50ms},"
                    " direction: forward}\n")
    plan = make_plan(load_topology(path, {}), "dp")
    d = through_json(Deployed.of(plan))
    assert d.links[0].forward == plan.links[0].forward and d.links[0].forward.rate.bps == 10e6
    assert d.schedule == plan.topology.schedule and d.schedule[0].duration.seconds == 1.0
    assert d.to_dict()["links"][0]["forward"]["rate_bps"] == 10e6


def test_placement_is_recorded_where_the_backend_put_it():
    d = through_json(deployed("dumbbell.yaml", {"loss": "1%"}))
    by_label = {e.label: e for e in d.emulated}
    # routers' directions stay at the sender's egress; so do all of netem's
    assert by_label["r1->r2"].ingress is None and by_label["r1->r2"].netns == "tb-dp-r1"
    netem = deployed("line.yaml", {"routers": 2, "hop_delay": "1ms"}, backend="netem")
    assert all(e.ingress is None for e in netem.emulated)
    # a host's traffic to a router is delayed at the router's ingress by userspace
    host_edge = deployed("line.yaml", {"routers": 2}).links[0]
    fwd = host_edge.directions[0]
    assert fwd.label == "h1->r1"
    plan_nodes = deployed("line.yaml", {"routers": 2}).nodes
    assert links.placement("userspace", fwd, plan_nodes) == Place("tb-dp-r1", fwd.peer_ifname)
    assert links.placement("netem", fwd, plan_nodes) is None


def test_a_change_of_one_direction_gives_a_new_value():
    d = deployed("dumbbell.yaml", {"loss": "1%"})
    fwd, rev = d.link(2).directions
    after = d.with_direction(rev, type(rev.impairment)(), None, None)
    assert after.link(2).reverse.is_empty and after.link(2).forward == d.link(2).forward
    assert after.emulation(rev) is None and after.emulation(fwd) == d.emulation(fwd)
    assert d.link(2).reverse == rev.impairment            # the old value is untouched
    assert through_json(after) == after
    slower = d.with_direction(fwd, fwd.impairment.merged(live.parse_settings(["rate=1mbit"])),
                              d.emulation(fwd), None)
    assert slower.emulated == d.emulated and slower.link(2).forward.rate.bps == 1e6
    back = after.with_direction(rev, rev.impairment, d.emulation(rev), "userspace")
    assert back.emulation(rev) == d.emulation(rev) and back.link(2) == d.link(2)


def test_a_version_1_state_is_refused_naming_the_file_and_down():
    data = json.loads(V1.read_text())
    assert data["version"] == 1 and STATE_VERSION == 2
    with pytest.raises(TestbedError) as exc:
        Deployed.from_dict(data, file="/run/testbed/old/state.json")
    message = str(exc.value)
    assert message.startswith("/run/testbed/old/state.json was written by an older version "
                              "of testbed (state version 1)"), message
    assert "`testbed down --name old` still takes it down" in message


@pytest.mark.parametrize("change, said", [
    (lambda d: d.pop("links"), "KeyError: 'links'"),
    (lambda d: d["links"][0].update(forward={"rate": "10mbit"}), "unknown impairment field"),
    (lambda d: d.update(version=3), "a newer version of testbed (state version 3)"),
    (lambda d: d.pop("version"), "something other than testbed"),
])
def test_a_state_this_version_cannot_read_is_one_clear_error(change, said):
    data = deployed("dumbbell.yaml", {}).to_dict()
    change(data)
    with pytest.raises(TestbedError, match="^x/state.json") as exc:
        Deployed.from_dict(data, file="x/state.json")
    assert said in str(exc.value)


@pytest.fixture
def v1_instance(tmp_path, monkeypatch):
    """An instance directory holding a version 1 state.json (no namespaces)."""
    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "state.json").write_text(V1.read_text())
    return tmp_path / "old" / "state.json"


def test_readers_of_a_version_1_instance_say_what_to_do(v1_instance):
    with pytest.raises(TestbedError, match=f"^{v1_instance} was written by an older"):
        state.Journal("old").read_deployed()
    facts = status.instance_status("old")
    assert facts["complete"] is False and str(v1_instance) in facts["note"]
    assert "testbed down --name old" in status.render({"instances": [facts]})


class RecordingBackend:
    """Stands in for the userspace backend: records where ``apply`` was asked to act."""

    name = "userspace"

    def __init__(self):
        self.applied = []

    def apply(self, netns, ifname, imp, *, owner_tag, state_dir, rtt_hint, mtu, ingress=None):
        self.applied.append((netns, ifname, ingress))

    def apply_all(self, targets, *, state_dir):
        self.applied += [(t.netns, t.ifname, t.ingress) for t in targets]


def test_up_applies_each_direction_where_deployed_says_it_is(tmp_path):
    from testbed.emulation import Selection
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes: {h1: {kind: host}, r1: {kind: router}}\n"
                    "links: [{endpoints: [h1, r1], delay: 5ms}]\n")
    plan = make_plan(load_topology(path, {}), "dp")
    backend = RecordingBackend()
    links.apply(plan, Selection(backend, "test"), tmp_path)
    recorded = [links.emulated("userspace", d, plan.nodes) for d in links.directions(plan)]
    assert backend.applied == [
        (e.netns, e.ifname, None if e.ingress is None else (e.ingress.netns, e.ingress.ifname))
        for e in recorded]
    assert backend.applied == [("tb-dp-h1", "eth0", ("tb-dp-r1", "eth0")),
                               ("tb-dp-r1", "eth0", None)]


def test_a_live_change_that_starts_emulating_a_direction_puts_it_where_up_would(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes: {h1: {kind: host}, r1: {kind: router}}\n"
                    "links: [{endpoints: [h1, r1]}]\n")
    before = Deployed.of(make_plan(load_topology(path, {}), "dp"))      # nothing emulated
    fwd = before.links[0].directions[0]
    imp = live.parse_settings(["delay=5ms"])
    backend = RecordingBackend()
    after, in_force, _notes = live._set_one(before, backend, fwd, (imp, False, imp), 0.0, None,
                                            tmp_path)
    assert in_force == imp and after.links[0].forward == imp
    assert backend.applied == [("tb-dp-h1", "eth0", ("tb-dp-r1", "eth0"))]
    assert after.emulation(fwd) == links.emulated("userspace", fwd, before.nodes)
    assert after.link_backend == "userspace" and through_json(after) == after
