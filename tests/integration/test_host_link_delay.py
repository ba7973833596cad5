"""A delay on a host's own link must not throttle that host's TCP.

With the userspace backend a packet held in the sender's egress stays
charged to its socket and TCP Small Queues would cap the flow at a few
Mbit/s; the backend therefore delays a host's packets at the receiver.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from tb_helpers import TIMING

import testbed

pytestmark = [pytest.mark.root, TIMING]

TOPO = """
name: hostdelay
nodes: {h1: {}, h2: {}, r1: {kind: router}}
links:
  - endpoints: [h1, r1]
    delay: 10ms
  - endpoints: [r1, h2]
"""


def test_tcp_through_a_delayed_host_link_is_not_throttled(write_topology, clean_instance):
    with testbed.up(write_topology(TOPO), name=clean_instance) as net:
        rtt = net["h1"].run(["ping", "-c", "5", "-i", "0.2", "h2"]).stdout
        avg = float(rtt.strip().splitlines()[-1].split("/")[4])
        assert 19.5 < avg < 30, rtt                    # 10 ms each way on h1-r1
        server = net["h2"].popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
        try:
            out = None
            for _ in range(50):                        # until the server listens
                proc = net["h1"].run(["iperf3", "-c", "h2", "-t", "2", "--json"], check=False)
                if proc.returncode == 0:
                    out = json.loads(proc.stdout)
                    break
            assert out is not None, "iperf3 never connected"
        finally:
            server.kill()
            server.wait()
        mbps = out["end"]["sum_received"]["bits_per_second"] / 1e6
        # held in h1's own egress the flow was capped near 5 Mbit/s; unthrottled it
        # runs at hundreds of Mbit/s even on a busy 2-core machine
        assert mbps > 100, f"{mbps:.1f} Mbit/s through a 20 ms RTT host link"
        if net.link_backend == "userspace":
            shown = net.deployed.emulated
            assert {e.sender for e in shown} == {"h1", "r1"}
