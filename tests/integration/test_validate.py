"""``testbed validate``: measured vs configured on a small topology (userspace backend)."""

from __future__ import annotations

import subprocess

import pytest
from tb_helpers import TIMING, run_cli

import testbed
from testbed.instance.validate import IPERF_PORT, validate

pytestmark = [pytest.mark.root, TIMING]

TOPO = """
name: validate
nodes:
  h1: {kind: host}
  h2: {kind: host}
links:
  - endpoints: [h1, h2]
    forward: {delay: 10ms, loss: 2%, rate: 20mbit}
    reverse: {delay: 5ms}
"""


def checks(report, direction):
    entry = next(d for d in report.directions if d.direction == direction)
    return {c.name: c for c in entry.checks}


def test_within_tolerance_then_a_mis_set_rate_is_flagged(clean_instance, write_topology):
    with testbed.up(write_topology(TOPO), name=clean_instance, link_backend="userspace") as net:
        report = validate(net)
        fwd, rev = checks(report, "h1->h2"), checks(report, "h2->h1")
        assert fwd["rtt"].ok, report.render()
        assert fwd["loss"].ok and rev["loss"].ok, report.render()
        assert fwd["wire rate"].ok, report.render()
        assert 19e6 < fwd["wire rate"].detail["bps"] < 21e6
        assert fwd["goodput"].ok is None     # lossy direction: reported, not judged
        assert "wire rate" not in rev

        # change the tbf behind the testbed's back: 20 -> 12 Mbit/s
        link = net.links[0]
        subprocess.run(["ip", "netns", "exec", net["h1"].netns, "tc", "qdisc", "change", "dev",
                        link.a_ifname, "root", "handle", "7462:", "tbf", "rate", "12mbit",
                        "burst", "3025", "limit", "40000"], check=True)
        report = validate(net, links=["h1-h2"])
        assert not report.ok
        fwd = checks(report, "h1->h2")
        assert fwd["wire rate"].ok is False, report.render()
        assert 11e6 < fwd["wire rate"].detail["bps"] < 13e6
        assert "OUT OF TOLERANCE" in report.render()


def test_cli_exit_code_and_unknown_link(clean_instance, write_topology):
    clean = write_topology(TOPO.replace("forward: {delay: 10ms, loss: 2%, rate: 20mbit}",
                                        "forward: {delay: 3ms}").replace(
                                            "reverse: {delay: 5ms}", "reverse: {delay: 2ms}"))
    proc = run_cli("validate", str(clean), "--name", clean_instance, "--link-backend", "userspace",
                   check=False)
    assert "h1->h2: delay 3ms" in proc.stdout, proc.stdout + proc.stderr
    assert "rtt" in proc.stdout and "configured 5 ms" in proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = run_cli("validate", str(clean), "--name", clean_instance, "--link", "h1-h9",
                  "--link-backend", "userspace", check=False)
    assert bad.returncode != 0 and "no link 'h1-h9'" in bad.stderr, bad.stderr



def test_a_lost_udp_start_datagram_is_retried(clean_instance, write_topology):
    """iperf3 does not resend the small datagram that starts a UDP test; when the link loses
    it, the client waits for ever. Here h2 drops every other such datagram: validate must
    notice the hung client, try again and still measure the rate."""
    topo = TOPO.replace("loss: 2%, ", "")
    with testbed.up(write_topology(topo), name=clean_instance, link_backend="userspace") as net:
        rule = ["INPUT", "-p", "udp", "--dport", str(IPERF_PORT), "-m", "length", "--length",
                "0:100", "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0",
                "-j", "DROP"]
        net["h2"].run(["iptables", "-w", "-A", *rule])
        fwd = checks(validate(net, links=["h1-h2"], rtt_count=20), "h1->h2")
        counters = net["h2"].run(["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"]).stdout
        dropped = int(next(l for l in counters.splitlines() if "DROP" in l).split()[0])
        assert dropped >= 1, counters
        assert fwd["wire rate"].ok, fwd["wire rate"]
        assert 19e6 < fwd["wire rate"].detail["bps"] < 21e6


ROUTERS = """
name: validate-routers
nodes:
  h1: {kind: host}
  h2: {kind: host}
  r1: {kind: router}
  r2: {kind: router}
links:
  - endpoints: [h1, r1]
  - endpoints: [r1, r2]
    rate: 50mbit
    delay: 20ms
    forward: {loss: 0%}
  - endpoints: [r2, h2]
"""


def test_a_routers_direction_is_measured_with_host_traffic_through_it(clean_instance,
                                                                     write_topology):
    """A router's own sockets sit behind its egress delay line (TCP small queues cap them at
    a few Mbit/s); validate sends host traffic through the link instead. 'loss: 0%' is
    no loss: its goodput is judged."""
    with testbed.up(write_topology(ROUTERS), name=clean_instance,
                    link_backend="userspace") as net:
        report = validate(net, links=["r1-r2"], rtt_count=50)
        assert report.ok, report.render()
        for direction, via in (("r1->r2", "h1->h2"), ("r2->r1", "h2->h1")):
            c = checks(report, direction)
            assert 47.5e6 < c["wire rate"].detail["bps"] < 52.5e6, report.render()
            assert c["goodput"].ok is True, report.render()
            assert f"traffic {via} through {direction}" in c["wire rate"].detail["note"]


def test_the_error_per_pass_is_measured_against_an_undelayed_link(clean_instance,
                                                                  write_topology):
    with testbed.up(write_topology(ROUTERS), name=clean_instance,
                    link_backend="userspace") as net:
        report = validate(net, links=["r1-r2"], rtt_count=100)
        per_pass = checks(report, "r1->r2")["per pass"]
        assert per_pass.detail["passes"] == 2, report.render()
        assert 0 < per_pass.detail["base_ms"] < 1, per_pass       # h1-r1: a veth and back
        assert "h1-r1 (not emulated)" in per_pass.detail["note"]
        assert abs(per_pass.detail["error_ms"]["p50"]) < 1.0, report.render()
        assert "per pass" in report.render()


AQM = """
name: validate-aqm
defaults: {{cc: cubic}}
nodes:
  h1: {{kind: host}}
  h2: {{kind: host}}
  r1: {{kind: router}}
  r2: {{kind: router}}
links:
  - endpoints: [h1, r1]
  - endpoints: [r1, r2]
    rate: 20mbit
    delay: 10ms
    queue: 8bdp
    forward: {{aqm: {aqm}}}
  - endpoints: [r2, h2]
"""


@pytest.mark.parametrize("aqm", ["codel", "fifo"])
def test_the_standing_queue_of_an_aqm_under_a_saturating_flow(clean_instance, write_topology,
                                                              aqm):
    """CoDel holds the standing queue near its 5 ms target; a fifo of 8 BDP (160 ms at
    20 Mbit/s) fills: the same check judges both, against what each should do."""
    with testbed.up(write_topology(AQM.format(aqm=aqm)), name=clean_instance,
                    link_backend="userspace") as net:
        report = validate(net, links=["r1-r2"], rtt_count=50)
    queue = checks(report, "r1->r2")["queue"]
    assert "queue" not in checks(report, "r2->r1"), report.render()   # no aqm that way
    assert queue.ok is True, report.render()
    if aqm == "codel":     # no tbf: the wire rate is read where the engine's queue sends
        assert report.ok, report.render()
        wire = checks(report, "r1->r2")["wire rate"]
        assert wire.detail["source"].startswith("interface tx bytes"), report.render()
        assert 19e6 < wire.detail["bps"] < 21e6, report.render()
    standing = queue.detail["standing_ms"]["p50"]
    if aqm == "codel":
        assert standing < 15, report.render()
    else:
        assert 80 < standing < 165, report.render()
