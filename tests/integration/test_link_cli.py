"""``testbed link show|set`` on a testbed that is up (userspace backend)."""

from __future__ import annotations

import json
import re
import statistics

import pytest
from tb_helpers import TIMING, run_cli

import testbed

pytestmark = [pytest.mark.root, TIMING]

TOPO = """
name: linkcli
nodes:
  h1: {kind: host}
  h2: {kind: host}
links:
  - endpoints: [h1, h2]
    forward: {delay: 2ms}
"""


def median_rtt_ms(net, count=20) -> float:
    net["h1"].run(["ping", "-n", "-c", "2", "-i", "0.05", net["h2"].ipv4], check=False)
    out = net["h1"].run(["ping", "-n", "-c", str(count), "-i", "0.02", "-W", "1",
                         net["h2"].ipv4], check=False).stdout
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    assert len(rtts) >= count // 2, out
    return statistics.median(rtts)


def test_set_delay_then_loss_only(clean_instance, write_topology):
    run_cli("up", str(write_topology(TOPO)), "--name", clean_instance,
            "--link-backend", "userspace")
    try:
        net = testbed.attach(clean_instance)
        assert 1.5 < median_rtt_ms(net) < 6

        out = run_cli("link", "set", "h1-h2", "delay=10ms", "--direction", "forward",
                      "--testbed", clean_instance).stdout
        assert "h1->h2: delay 10ms" in out, out
        assert 9.5 < median_rtt_ms(net) < 16

        # named the other way round: forward is h2->h1 now; a direction with no
        # emulation yet gets it
        run_cli("link", "set", "h2-h1", "delay=5ms", "--direction", "forward",
                "--testbed", clean_instance)
        assert 14.5 < median_rtt_ms(net) < 22

        run_cli("link", "set", "h1-h2", "loss=1%", "--direction", "forward",
                "--testbed", clean_instance)
        shown = json.loads(run_cli("link", "show", "--link", "h1-h2", "--json",
                                   "--testbed", clean_instance).stdout)
        by_dir = {e["direction"]: e for e in shown}
        assert "delay 10ms" in by_dir["h1->h2"]["configured"], shown
        assert "loss 1%" in by_dir["h1->h2"]["configured"], shown
        assert "delay 5ms" in by_dir["h2->h1"]["configured"], shown
        assert by_dir["h1->h2"]["backend"] == "userspace"
        assert by_dir["h1->h2"]["fields"] == {"delay_s": 0.01, "loss": 0.01}, shown
        assert 14.5 < median_rtt_ms(net) < 22   # delay kept
        text = run_cli("link", "show", "--link", "h1-h2", "--testbed", clean_instance).stdout
        assert "in force: delay 10ms, loss 1%" in text and "link engine: pid" in text, text
        assert "{" not in text, text                    # for people, not a JSON dump
        assert "None" not in text, text                 # no rate here: no tbf line at all

        now = testbed.attach(clean_instance).deployed    # state.json follows the change
        assert now.links[0].forward.describe() == "delay 10ms, loss 1%"

        bad = run_cli("link", "set", "h1-h3", "delay=1ms", "--testbed", clean_instance,
                      check=False)
        assert bad.returncode != 0 and "no link 'h1-h3'" in bad.stderr, bad.stderr
        bad = run_cli("link", "set", "h1-h2", "delya=1ms", "--testbed", clean_instance,
                      check=False)
        assert bad.returncode != 0 and "unknown impairment delya" in bad.stderr, bad.stderr
    finally:
        down = run_cli("down", "--name", clean_instance, check=False)
        assert down.returncode == 0, down.stderr
