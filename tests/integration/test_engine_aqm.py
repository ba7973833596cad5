"""The link engine as the bottleneck (userspace backend): CoDel, FQ-CoDel, RED and PIE on a
real TCP flow, and ECN CE marks instead of drops."""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import subprocess
import time

import pytest
from tb_helpers import TIMING

import testbed
from testbed.emulation import enginectl

pytestmark = [pytest.mark.root, TIMING]
_names = itertools.count()


@pytest.fixture
def instance_name() -> str:
    """This module's instances carry the fq prefix (shared hosts: no collisions)."""
    return f"fq{os.getpid() % 10000}{next(_names)}"

TOPO = """
name: leaqm
defaults:
  cc: cubic
  sysctls: {{net.ipv4.tcp_ecn: {ecn_hosts}}}
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
    forward: {{aqm: {aqm}{ecn}}}
  - endpoints: [r2, h2]
"""


def bulk_flow_rtts(tmp_path, name: str, aqm: str, ecn: bool) -> tuple[list[float], dict, float]:
    """A 6 s CUBIC flow h1 -> h2 through the bottleneck: ping RTTs (ms) in its last 4 s,
    the lane's bottleneck counters (none for a fifo: tbf's; plus ``delivered_ce``: CE marks the receiver echoed
    back, the sender's TcpExtTCPDeliveredCE) and the goodput (bit/s)."""
    path = tmp_path / f"{aqm}.yaml"
    path.write_text(TOPO.format(aqm=aqm, ecn=", ecn: true" if ecn else "",
                                ecn_hosts=1 if ecn else 0))
    with testbed.up(path, name=name, link_backend="userspace") as net:
        server = net["h2"].popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        ping = net["h1"].popen(["ping", "-n", "-i", "0.1", "-c", "55", "h2"],
                               stdout=subprocess.PIPE, text=True)
        client = net["h1"].run(["iperf3", "-c", "h2", "-t", "6", "-J"], timeout=30)
        out, _ = ping.communicate(timeout=30)
        server.wait(timeout=10)
        lanes = enginectl.fresh_status(net.state_dir)["lanes"]
        netstat = net["h1"].run(["cat", "/proc/net/netstat"]).stdout
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    queue = next((l["bottleneck"] for l in lanes.values() if l["bottleneck"] is not None), {})
    queue["delivered_ce"] = tcp_ext(netstat, "TCPDeliveredCE")
    goodput = json.loads(client.stdout)["end"]["sum_received"]["bits_per_second"]
    print(aqm, ecn, sorted(rtts[20:])[::5], queue, goodput)
    return rtts[20:], queue, goodput


def tcp_ext(netstat: str, name: str) -> int:
    """One TcpExt counter of /proc/net/netstat (a header line, then a value line)."""
    lines = [line.split() for line in netstat.splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1]))[name])


def test_codel_keeps_the_standing_queue_short_where_a_fifo_fills_it(tmp_path, clean_instance):
    rtts, queue, bps = bulk_flow_rtts(tmp_path, clean_instance, "codel", False)
    # 20 ms of base RTT; 8 BDP of buffer would let a fifo add up to 160 ms
    assert statistics.median(rtts) < 20 + 25, rtts
    assert queue["aqm_drops"] > 0 and queue["tail_drops"] == 0, queue
    assert bps > 0.8 * 20e6 * 1448 / 1514, bps


def test_with_ecn_codel_marks_instead_of_dropping(tmp_path, clean_instance):
    rtts, queue, bps = bulk_flow_rtts(tmp_path, clean_instance, "codel", True)
    assert queue["marks"] > 0 and queue["aqm_drops"] <= queue["marks"] // 10, queue
    assert queue["delivered_ce"] > 0, queue
    assert statistics.median(rtts) < 20 + 25, rtts
    assert bps > 0.8 * 20e6 * 1448 / 1514, bps


def test_red_drops_early(tmp_path, clean_instance):
    rtts, queue, _bps = bulk_flow_rtts(tmp_path, clean_instance, "red", False)
    assert queue["aqm_drops"] > 0, queue


def test_fq_codel_keeps_a_sparse_flow_at_the_base_rtt_where_a_fifo_delays_it(tmp_path,
                                                                           clean_instance):
    """The pings are a second, sparse flow through the bulk flow's bottleneck: FQ-CoDel
    serves them first (a new flow). fq_codel was refused by the userspace backend."""
    rtts, queue, bps = bulk_flow_rtts(tmp_path, clean_instance, "fq_codel", False)
    assert statistics.median(rtts) < 20 + 5 and max(rtts) < 20 + 15, rtts
    assert queue["aqm_drops"] > 0 and queue["tail_drops"] == 0, queue
    assert queue["new_flow_count"] > 2, queue       # the pings came as new flows
    assert bps > 0.8 * 20e6 * 1448 / 1514, bps
    fifo_rtts, _q, _bps = bulk_flow_rtts(tmp_path, f"{clean_instance}f", "fifo", False)
    assert statistics.median(fifo_rtts) > 20 + 40, fifo_rtts   # the buffer, not fq


def test_with_ecn_fq_codel_marks_and_the_receiver_echoes_them(tmp_path, clean_instance):
    rtts, queue, bps = bulk_flow_rtts(tmp_path, clean_instance, "fq_codel", True)
    assert queue["marks"] > 0 and queue["aqm_drops"] <= queue["marks"] // 10, queue
    assert queue["delivered_ce"] > 0, queue
    assert statistics.median(rtts) < 20 + 5, rtts
    assert bps > 0.8 * 20e6 * 1448 / 1514, bps


def test_pie_holds_the_queue_near_its_target_not_the_buffer(tmp_path, clean_instance):
    """20 ms of base RTT, PIE's target 15 ms; a fifo fills 8 BDP (up to +160 ms). pie was
    refused by the userspace backend."""
    rtts, queue, bps = bulk_flow_rtts(tmp_path, clean_instance, "pie", False)
    assert statistics.median(rtts) < 20 + 30, rtts
    assert queue["aqm_drops"] > 0 and queue["tail_drops"] == 0 and "pie_prob" in queue, queue
    assert bps > 0.8 * 20e6 * 1448 / 1514, bps


def test_with_ecn_pie_marks_instead_of_dropping(tmp_path, clean_instance):
    rtts, queue, bps = bulk_flow_rtts(tmp_path, clean_instance, "pie", True)
    assert queue["marks"] > 0 and queue["aqm_drops"] <= queue["marks"] // 10, queue
    assert queue["delivered_ce"] > 0, queue
    assert statistics.median(rtts) < 20 + 30, rtts
