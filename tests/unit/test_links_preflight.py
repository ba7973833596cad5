"""What links.choose refuses or notes before anything is built (pure: plans only)."""

from pathlib import Path

import pytest

from testbed.emulation import links
from testbed.emulation import Selection, UserspaceBackend
from testbed.errors import PreflightError
from testbed.instance.network import load_topology
from testbed.plan.planner import make_plan

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
USERSPACE = Selection(UserspaceBackend(), "requested")


def line(routers, **variables):
    return make_plan(load_topology(TOPOLOGIES / "line.yaml", {"routers": routers, **variables}),
                     "lp")


def test_a_delay_on_every_hop_of_a_long_line_is_not_refused():
    """One link engine serves every direction: no per-direction memory budget any more
    (62 daemons needed 2.46 GB; a 1000-router line ~60 GB, refused on any machine)."""
    selection = links.choose(line(1000, hop_delay="1ms"), "userspace")
    assert selection is not None and selection.backend.name == "userspace"


def test_zero_loss_is_not_per_packet():
    assert not links.needs_per_packet(make_plan(load_topology(TOPOLOGIES / "dumbbell.yaml",
                                                              {"loss": "0%"}), "lp"))
    assert links.needs_per_packet(make_plan(load_topology(TOPOLOGIES / "dumbbell.yaml",
                                                          {"loss": "0.1%"}), "lp"))


@pytest.mark.parametrize("impairment, netem_hint", [
    ("queue: 100p", False),          # netem cannot either: no point in sending users there
    ("duplicate: 1%", True),         # netem can
])
def test_sch_netem_is_suggested_only_for_what_netem_can_do(tmp_path, impairment, netem_hint):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nnodes: {h1: {kind: host}, r1: {kind: router}}\n"
                    f"links: [{{endpoints: [h1, r1], {impairment}}}]\n")
    with pytest.raises(PreflightError) as exc:
        links.choose(make_plan(load_topology(path, {}), "lp"), "userspace")
    assert ("sch_netem (see vagrant/guest)" in str(exc.value)) is netem_hint, str(exc.value)
