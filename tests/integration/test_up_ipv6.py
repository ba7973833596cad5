"""IPv6 works as soon as `up` returns; an IPv4-only topology leaves IPv6 as the kernel has it."""

from __future__ import annotations

import subprocess

import pytest

import testbed

from tb_helpers import leftovers

pytestmark = pytest.mark.root

DUAL = """
name: dual
addressing: {ipv4: "10.0.0.0/16", ipv6: "fd00:1::/48"}
nodes: {h1: {}, r1: {kind: router}, h2: {}}
links: [{endpoints: [h1, r1]}, {endpoints: [r1, h2]}]
"""
KEY = "net.ipv6.conf.default.accept_dad"


def _fresh_namespace_value(key: str) -> str:
    """What a new network namespace starts with (an anonymous one, gone at once)."""
    return subprocess.run(["unshare", "--net", "sysctl", "-n", key], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_ipv6_needs_no_duplicate_address_detection_wait(write_topology, clean_instance):
    with testbed.up(write_topology(DUAL), name=clean_instance) as net:
        for node in net.nodes.values():
            assert node.run(["sysctl", "-n", KEY]).stdout.strip() == "0"
        target = str(net["h2"].ipv6)
        out = net["h1"].run(["ping", "-6", "-c", "1", "-W", "1", target])
        assert out.returncode == 0, out.stdout + out.stderr
    assert leftovers(clean_instance) == []


def test_an_ipv4_only_topology_leaves_ipv6_alone(write_topology, clean_instance):
    text = DUAL.replace('ipv6: "fd00:1::/48"', 'prefix: 30')
    with testbed.up(write_topology(text), name=clean_instance) as net:
        assert net["h1"].ipv6 is None
        assert net["h1"].run(["sysctl", "-n", KEY]).stdout.strip() == _fresh_namespace_value(KEY)
