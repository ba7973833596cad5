"""A topology cannot set a host-wide sysctl: testbed changes sysctls only inside its
namespaces (README, Security). Refused in preflight, before anything exists."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.root

ALLOWED = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


def test_a_host_wide_sysctl_is_refused_before_anything_is_made(tmp_path):
    topo = tmp_path / "gs.yaml"
    topo.write_text("name: gs\nnodes:\n"
                    "  h1: {kind: host, sysctls: {net.ipv4.tcp_allowed_congestion_control: reno,"
                    " net.ipv4.tcp_ecn: 1}}\n"
                    "  h2: {kind: host}\nlinks:\n  - endpoints: [h1, h2]\n")
    before = ALLOWED.read_text()
    p = subprocess.run([sys.executable, "-m", "testbed", "up", str(topo), "--name", "hwsys"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert "tcp_allowed_congestion_control is host-wide" in p.stderr
    assert "tcp_ecn" not in p.stderr            # a namespace's own sysctl is fine
    assert ALLOWED.read_text() == before
    assert "tb-hwsys-" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                             text=True).stdout
