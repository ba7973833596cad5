"""Names that become namespaces, interfaces, sysctl paths, directories or file names
are matched whole: '^...$' with re.match let a trailing newline through."""

import pytest

from testbed.errors import ConfigError
from testbed.model.document import load_text
from testbed.model.topology import check_instance_name, parse_topology
from testbed.instance.network import plan_for

TOPOLOGY = "name: t\nnodes: {h1: {}, h2: {}}\nlinks:\n  - endpoints: [h1, h2]\n"


@pytest.mark.parametrize("name", ["x\n", "a b", "-x", "1x", "", "x" * 25, None, ["x"]])
def test_check_instance_name_refuses_with_the_option(name):
    with pytest.raises(ConfigError) as info:
        check_instance_name(name)
    assert str(info.value).startswith("--name: instance name")


@pytest.mark.parametrize("name", ["x", "hi1", "Lab_2-b", "x" * 24])
def test_check_instance_name_accepts(name):
    assert check_instance_name(name) == name


def test_plan_refuses_an_instance_name_with_a_newline():
    topo = parse_topology(load_text(TOPOLOGY, "t.yaml"))
    with pytest.raises(ConfigError, match="is not a safe name"):
        plan_for(topo, "x\n")


@pytest.mark.parametrize("text, path", [
    ('name: t\nnodes: {"h1\\n": {}, h2: {}}\n', "nodes.h1\n"),
    ('name: t\nnodes: {h1: {sysctls: {"net.ipv4.tcp_ecn\\n": 1}}, h2: {}}\n',
     "nodes.h1.sysctls.net.ipv4.tcp_ecn\n"),
])
def test_keys_with_a_trailing_newline_are_refused(text, path):
    with pytest.raises(ConfigError) as info:
        parse_topology(load_text(text, "t.yaml"))
    assert info.value.path == path
