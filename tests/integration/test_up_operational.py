"""`up` returns with every interface operational, without a second pass over the nodes.

Each veth is made with the end of the node configured last already up, and
each node brings its other ends up when it is configured; so once a node
is configured every link of it has both ends up. A get of one interface
lets the kernel finish a pending carrier change first (Linux 6.8 and
later), so the check in the same visit sees UP and no node is revisited.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import testbed
from testbed.realize import build as backend

from tb_helpers import leftovers

pytestmark = pytest.mark.root
LINE = Path(__file__).parents[2] / "topologies" / "line.yaml"


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def test_every_interface_is_up_when_up_returns_and_none_was_waited_for(clean_instance,
                                                                        monkeypatch):
    waited: list[str] = []
    wait = backend._wait_operational

    def recording(nodes, spaces, *args, **kwargs):
        waited.extend(node.name for node in nodes)
        return wait(nodes, spaces, *args, **kwargs)

    monkeypatch.setattr(backend, "_wait_operational", recording)
    with testbed.up(LINE, name=clean_instance, variables={"routers": 30}) as net:
        for node in net.nodes.values():
            links = json.loads(node.run(["ip", "-j", "link", "show"]).stdout)
            states = {link["ifname"]: link["operstate"] for link in links}
            assert {i.ifname for i in node.interfaces} <= set(states), states
            assert all(states[i.ifname] == "UP" for i in node.interfaces), (node.name, states)
    assert leftovers(clean_instance) == []
    if _kernel() >= (6, 8):
        assert waited == []
