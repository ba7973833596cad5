"""A topology's schedule carried out on a running testbed: pings see each step."""

from __future__ import annotations

import re

import pytest
from tb_helpers import TIMING

import testbed
from testbed.emulation.scheduler import Scheduler

pytestmark = [pytest.mark.root, TIMING]

TOPO = """
name: sched
nodes:
  h1: {kind: host}
  h2: {kind: host}
links:
  - endpoints: [h1, h2]
    forward: {delay: 2ms}
    reverse: {delay: 1ms}
schedule:
  - {at: 1s, link: h1-h2, set: {delay: 30ms}, direction: forward}
  - {at: 2s, for: 1s, link: h2-h1, set: {loss: 100%}, direction: forward}
"""


def test_delay_step_and_outage_show_in_pings(clean_instance, write_topology):
    with testbed.up(write_topology(TOPO), name=clean_instance, link_backend="userspace") as net:
        h1, h2 = net["h1"], net["h2"]
        h1.run(["ping", "-n", "-c", "2", "-i", "0.05", h2.ipv4])
        sched = Scheduler.for_network(net)
        assert len(sched.entries) == 2
        sched.start()
        out = h1.run(["ping", "-D", "-n", "-c", "90", "-i", "0.05", "-W", "1", h2.ipv4],
                     check=False).stdout
        events = sched.stop()
        assert sched.errors == [], events
        step, outage, back = events
        assert (step["action"], outage["action"], back["action"]) == ("set", "set", "revert")
        assert step["result"] == ["h1->h2: delay 30ms"]
        assert outage["result"] == ["h2->h1: delay 1ms, loss 100%"]
        assert back["result"] == ["h2->h1: delay 1ms"]

        # (sent time, rtt ms) of every reply; sent = received - rtt
        replies = [(float(t) - float(ms) / 1e3, float(ms)) for t, ms in
                   re.findall(r"^\[([\d.]+)\].*time=([\d.]+) ms", out, re.M)]
        before = [ms for sent, ms in replies if sent < step["started_wall"]]
        after = [ms for sent, ms in replies if sent > step["wall"] + 0.01]
        assert before and max(before) < 15, out
        assert after and min(after) > 29, out
        # the outage: no reply for a ping whose reply (~31 ms after sending) met the
        # reverse direction while it dropped everything
        during = [ms for sent, ms in replies
                  if outage["wall"] + 0.01 < sent < back["started_wall"] - 0.05]
        assert during == [], (events, out)
        assert len(replies) < 90 - 5, out
        # ... and replies again once it was put back
        assert any(sent > back["wall"] + 0.05 for sent, _ in replies), out

        now = testbed.attach(net.name).deployed     # state.json follows the changes
        assert now.links[0].forward.delay.seconds == 0.03
        assert now.links[0].reverse == net.links[0].reverse
