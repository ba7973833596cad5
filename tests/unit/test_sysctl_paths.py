"""testbed.kernel.sysctl: keys below /proc/sys/net, opened relative to it."""

from pathlib import Path

import pytest

from testbed.kernel.sysctl import NetSysctls, relative_path


@pytest.mark.parametrize("key,path", [
    ("net.ipv4.ip_forward", "ipv4/ip_forward"),
    ("net.ipv6.conf.default.accept_dad", "ipv6/conf/default/accept_dad"),
])
def test_relative_path(key, path):
    assert relative_path(key) == path


def test_only_network_sysctls():
    with pytest.raises(ValueError, match="not a network sysctl: kernel.hostname"):
        relative_path("kernel.hostname")


def test_reads_what_proc_shows():
    key = "net.ipv4.tcp_congestion_control"
    with NetSysctls() as sysctls:
        assert sysctls.read(key) == Path("/proc/sys/net/ipv4/tcp_congestion_control") \
            .read_text().strip()
