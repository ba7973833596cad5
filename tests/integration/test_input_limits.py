"""Inputs that used to validate and then fail for real: hosts more than 64 links apart
(every ping died at hop 64), and a live link change the tbf message cannot carry."""

from __future__ import annotations

import itertools
import os
import re

import pytest
from tb_helpers import run_cli

import testbed

pytestmark = pytest.mark.root
_counter = itertools.count()


@pytest.fixture
def instance_name() -> str:
    """Names of this module's instances ("hi..."): unique to it."""
    return f"hi{os.getpid() % 100000}x{next(_counter)}"


def line(routers: int) -> str:
    """h1 - r1 - ... - rN - h2, with IPv4 and IPv6."""
    nodes = "".join(f"  r{i}: {{kind: router}}\n" for i in range(1, routers + 1))
    links = "".join(f"  - endpoints: [r{i}, r{i + 1}]\n" for i in range(1, routers))
    return (f"name: longline\naddressing: {{ipv4: 10.0.0.0/16, ipv6: 'fd00:7::/48'}}\n"
            f"nodes:\n  h1: {{}}\n  h2: {{}}\n{nodes}"
            f"links:\n  - endpoints: [h1, r1]\n{links}  - endpoints: [r{routers}, h2]\n")


def test_ping_crosses_a_line_of_100_routers(clean_instance, write_topology):
    out = run_cli("up", str(write_topology(line(100))), "--name", clean_instance,
                  timeout=300).stdout
    try:
        assert "note: the longest path crosses 101 links" in out, out
        net = testbed.attach(clean_instance)
        for flag, address in (("-4", net["h2"].ipv4), ("-6", net["h2"].ipv6)):
            ping = net["h1"].run(["ping", flag, "-n", "-c", "1", "-W", "5", address],
                                 check=False, timeout=30)
            assert ping.returncode == 0, ping.stdout + ping.stderr
            # the reply left h2 with 109 (101 links + 8) and crossed 100 routers
            assert re.search(r"(ttl|hlim)=9\b", ping.stdout), ping.stdout
    finally:
        run_cli("down", "--name", clean_instance, timeout=300)


TBF_LINK = """
name: tbflink
nodes: {h1: {}, h2: {}}
links:
  - endpoints: [h1, h2]
    rate: 10mbit
"""


def test_a_live_rate_the_tbf_cannot_take_is_refused_and_changes_nothing(clean_instance,
                                                                        write_topology):
    run_cli("up", str(write_topology(TBF_LINK)), "--name", clean_instance)
    try:
        bad = run_cli("link", "set", "h1-h2", "rate=50bit", "--testbed", clean_instance,
                      check=False)
        assert bad.returncode == 2, bad.stderr
        assert "Traceback" not in bad.stderr
        assert "rate 50bit is below 96bit, the least tbf takes at mtu 1500" in bad.stderr
        shown = run_cli("link", "show", "--testbed", clean_instance).stdout
        assert shown.count("in force: rate 10mbit") == 2, shown
        assert shown.count("tbf: rate 10 Mbit/s") == 2, shown
    finally:
        run_cli("down", "--name", clean_instance)
