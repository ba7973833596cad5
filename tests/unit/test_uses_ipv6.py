"""realize.build.uses_ipv6: IPv6 is set up (no DAD) only for plans that use it."""

from testbed.model.document import load_text
from testbed.model.topology import parse_topology
from testbed.plan.planner import make_plan
from testbed.realize.build import uses_ipv6

LINE = """
name: t
nodes: {h1: {}, r1: {kind: router}, h2: {}}
links: [{endpoints: [h1, r1]}, {endpoints: [r1, h2]}]
"""


def plan_of(text: str):
    return make_plan(parse_topology(load_text(text, "t.yaml")))


def test_ipv4_only_plan():
    assert not uses_ipv6(plan_of(LINE))


def test_ipv6_addressing():
    assert uses_ipv6(plan_of(LINE + 'addressing: {ipv4: "10.0.0.0/16", ipv6: "fd00:1::/48"}\n'))


def test_an_ipv6_sysctl_counts():
    text = LINE.replace("h2: {}", 'h2: {sysctls: {"net.ipv6.conf.all.disable_ipv6": 1}}')
    assert uses_ipv6(plan_of(text))
