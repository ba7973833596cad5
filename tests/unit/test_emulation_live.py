"""Naming links of a running testbed: a-b, b-a, and which direction is forward."""

import pytest

from testbed.emulation import live
from testbed.errors import ConfigError, TestbedError

DATA = {
    "instance": "x",
    "nodes": {n: {"netns": f"tb-x-{n}", "tag": f"testbed.x.{n}", "interfaces": []}
              for n in ("r1", "r2")},
    "links": [{"index": 0, "name": "r1-r2", "a": "r1", "a_ifname": "eth0", "b": "r2",
               "b_ifname": "eth1", "mtu": 1500, "forward": "delay 5ms", "reverse": "none"}],
    "emulated": [{"node": "r1", "ifname": "eth0", "tag": "testbed.x.r1", "direction": "r1->r2"}],
}


def test_forward_is_the_direction_as_named():
    (d,) = live.directions(DATA, "r1-r2", "forward")
    assert (d.label, d.side, d.netns, d.ifname) == ("r1->r2", "forward", "tb-x-r1", "eth0")
    (d,) = live.directions(DATA, "r2-r1", "forward")
    assert (d.label, d.side, d.netns, d.ifname) == ("r2->r1", "reverse", "tb-x-r2", "eth1")
    assert [d.label for d in live.directions(DATA, "r2-r1")] == ["r2->r1", "r1->r2"]


def test_emulated_and_unknown():
    fwd, rev = live.directions(DATA, "r1-r2")
    assert live.is_emulated(DATA, fwd) and not live.is_emulated(DATA, rev)
    with pytest.raises(TestbedError, match="no link 'r1-r3'.*links: r1-r2"):
        live.directions(DATA, "r1-r3")
    with pytest.raises(TestbedError, match="direction"):
        live.directions(DATA, "r1-r2", "up")


def test_settings_parse_strictly():
    imp = live.parse_settings(["delay=50ms", "loss=1%"])
    assert imp.delay.seconds == 0.05 and imp.loss.fraction == 0.01 and imp.rate is None
    with pytest.raises(ConfigError, match="unknown impairment"):
        live.parse_settings(["delya=1ms"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        live.parse_settings(["delay"])
    with pytest.raises(ConfigError):
        live.parse_settings(["loss=120%"])
