"""Explicit link addresses must be host addresses of their subnet (RFC 3021, RFC 6164)."""

import pytest

from testbed.model.document import load_text
from testbed.model.topology import parse_topology
from testbed.instance.network import plan_for


def _topology(a: str, b: str, family: str = "ipv4") -> str:
    return ("name: t\nnodes: {h1: {}, h2: {}}\nlinks:\n"
            f"  - endpoints: [{{node: h1, {family}: '{a}'}}, {{node: h2, {family}: '{b}'}}]\n")


@pytest.mark.parametrize("a, b, family", [
    ("10.9.0.0/31", "10.9.0.1/31", "ipv4"),          # RFC 3021: both addresses of a /31
    ("10.9.0.1/30", "10.9.0.2/30", "ipv4"),
    ("10.9.0.254/24", "10.9.0.1/24", "ipv4"),
    ("fd00::/127", "fd00::1/127", "ipv6"),            # RFC 6164
    ("fd00::1/64", "fd00::ffff:ffff:ffff:ffff/64", "ipv6"),   # no broadcast in IPv6
])
def test_host_addresses_are_accepted(a, b, family):
    plan = plan_for(parse_topology(load_text(_topology(a, b, family), "t.yaml")))
    version = 4 if family == "ipv4" else 6
    assert {str(addr) for n in plan.nodes.values() for i in n.interfaces
            for addr in i.addresses if addr.version == version} == {a, b}
