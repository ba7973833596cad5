"""The CLI as a user runs it: separate processes, exit codes, what is printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.realize import state
from testbed.kernel import netns

pytestmark = pytest.mark.root
ROOT = Path(__file__).parents[2]

TOPO = """
variables:
  cc: cubic
---
name: clitest
nodes:
  h1: {cc: "{{ cc }}"}
  h2: {cc: bbr}
  r1: {kind: router}
links:
  - endpoints: [h1, r1]
  - endpoints: [r1, h2]
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def mine(instance: str) -> list[str]:
    return [n for n in netns.list_names() if n.startswith(f"tb-{instance}-")]


@pytest.fixture
def topo(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(TOPO)
    return path


def test_up_status_exec_down(topo, instance_name):
    up = cli("up", str(topo), "--name", instance_name, "--set", "cc=reno")
    try:
        assert up.returncode == 0, up.stderr
        assert f"testbed {instance_name} is up: 3 nodes, 2 links" in up.stdout
        facts = json.loads(cli("status", "--name", instance_name, "--json").stdout)
        inst = facts["instances"][0]
        assert inst["nodes"]["h1"]["kind"] == "host" and inst["nodes"]["r1"]["kind"] == "router"
        assert inst["nodes"]["h1"]["cc"] == "reno" and inst["nodes"]["h2"]["cc"] == "bbr"
        assert inst["nodes"]["h1"]["routes"][0]["dst"] == "default"
        assert inst["nodes"]["r1"]["forwarding"] is True
        assert all(i["state"] == "UP" for n in inst["nodes"].values() for i in n["interfaces"])
        ping = cli("exec", "--name", instance_name, "h1", "--", "ping", "-c", "1", "-W", "2", "h2")
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "1 received" in ping.stdout
        # the command's exit code comes back
        assert cli("exec", "--name", instance_name, "h1", "--", "sh", "-c", "exit 7").returncode == 7
        unknown = cli("exec", "--name", instance_name, "h9", "--", "true")
        assert unknown.returncode != 0 and "no node 'h9'" in unknown.stderr
    finally:
        down = cli("down", "--name", instance_name)
    assert down.returncode == 0, down.stderr
    assert "removed 3 namespaces" in down.stdout
    assert mine(instance_name) == [] and not state.instance_dir(instance_name).exists()


@pytest.mark.parametrize("text,where", [
    ("name: t\nnodes: {h1: {}, h2: {}}\nlinks:\n  - endpoints: [h1, h3]\n", "links[0].endpoints[1]"),
    ("name: t\nnodes: {h1: {}, h2: {}}\nlinks:\n  - endpoints: [h1, h2]\n    delay: -3ms\n",
     "links[0].delay"),
    ("name: t\nnodes: {h1: {}, h2: {}\n", ""),
])
def test_bad_input_one_clear_line_nonzero_exit_nothing_created(tmp_path, instance_name, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = cli("up", str(path), "--name", instance_name)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"testbed: error: {path}") and where in lines[0]
    assert "Traceback" not in proc.stderr
    assert mine(instance_name) == []
    assert not state.instance_dir(instance_name).exists()


def test_unsafe_instance_name_is_rejected(topo):
    proc = cli("up", str(topo), "--name", "../../etc")
    assert proc.returncode == 2 and "not a safe name" in proc.stderr


def test_plan_touches_nothing(topo, instance_name):
    proc = cli("plan", str(topo), "--name", instance_name)
    assert proc.returncode == 0
    assert f"tb-{instance_name}-h1" in proc.stdout and "route default via" in proc.stdout
    assert mine(instance_name) == [] and not state.instance_dir(instance_name).exists()


def test_doctor_reports_what_the_kernel_offers():
    proc = cli("doctor")
    assert "tbf" in proc.stdout and "congestion control" in proc.stdout
    assert ("link emulation" in proc.stdout)
    assert proc.returncode == 0, proc.stdout
