"""Topologies become real namespaces, and come down leaving nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import testbed
from testbed.errors import PreflightError, RealizeError
from testbed.realize import state
from testbed.realize import build as backend
from testbed.kernel import sysctl
from testbed.kernel import netns

from tb_helpers import leftovers, run_cli, wait_for

pytestmark = pytest.mark.root
TOPOLOGIES = Path(__file__).parents[2] / "topologies"

PLAIN = """
name: plain
nodes:
  h1: {cc: reno}
  h2: {cc: bbr}
  h3: {cc: cubic}
  r1: {kind: router}
  r2: {kind: router}
links:
  - endpoints: [h1, r1]
  - endpoints: [h2, r1]
  - endpoints: [r1, r2]
  - endpoints: [r2, h3]
"""


def ping_all(net: testbed.Network) -> dict[tuple[str, str], int]:
    """Every host pings every other host (in parallel); returns exit codes."""
    procs = {}
    for a in net.hosts:
        for b in net.hosts:
            if a is not b:
                procs[(a.name, b.name)] = a.popen(["ping", "-c", "1", "-W", "2", b.name],
                                                  stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL)
    return {pair: p.wait(timeout=10) for pair, p in procs.items()}


def test_up_ping_everyone_then_down_leaves_nothing(write_topology, clean_instance):
    topo = write_topology(PLAIN)
    with testbed.up(topo, name=clean_instance) as net:
        assert set(net.nodes) == {"h1", "h2", "h3", "r1", "r2"}
        assert all(netns.exists(n.netns) for n in net.nodes.values())
        codes = ping_all(net)
        assert codes and all(code == 0 for code in codes.values()), codes
        # routers forward, hosts do not
        assert net["r1"].run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        assert net["h1"].run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    assert leftovers(clean_instance) == []


def test_congestion_control_is_in_force_per_node(write_topology, clean_instance):
    with testbed.up(write_topology(PLAIN), name=clean_instance) as net:
        for node, cc in (("h1", "reno"), ("h2", "bbr"), ("h3", "cubic")):
            out = net[node].run(["sysctl", "-n", "net.ipv4.tcp_congestion_control"]).stdout
            assert out.strip() == cc
            with net[node].enter():          # a new socket in the node gets it by default
                s = socket.socket()
                try:
                    got = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
                finally:
                    s.close()
            assert got.rstrip(b"\0").decode() == cc
        assert net.deployed.cc_in_force == {"h1": "reno", "h2": "bbr", "h3": "cubic",
                                              "r1": "cubic", "r2": "cubic"}


def test_two_instances_of_one_topology_at_once(write_topology, instance_name):
    topo = write_topology(PLAIN)
    a_name, b_name = instance_name + "a", instance_name + "b"
    try:
        with testbed.up(topo, name=a_name) as a:
            with testbed.up(topo, name=b_name) as b:
                assert a["h1"].netns != b["h1"].netns
                assert all(c == 0 for c in ping_all(a).values())
                assert all(c == 0 for c in ping_all(b).values())
            assert leftovers(b_name) == []
            # taking b down left a intact
            assert all(c == 0 for c in ping_all(a).values())
    finally:
        for name in (a_name, b_name):
            assert leftovers(name) == [], name


def test_a_namespace_name_taken_by_another_instance_names_that_instance(write_topology,
                                                                         instance_name):
    """Instance 'X-a' with node h1 and instance 'X' with node a-h1 both want tb-X-a-h1."""
    first = write_topology("name: t\nnodes: {h1: {kind: host}, h2: {kind: host}}\n"
                           "links: [{endpoints: [h1, h2]}]\n", "first.yaml")
    second = write_topology("name: t\nnodes: {a-h1: {kind: host}, h2: {kind: host}}\n"
                            "links: [{endpoints: [a-h1, h2]}]\n", "second.yaml")
    owner, clashing = instance_name + "-a", instance_name
    try:
        with testbed.up(first, name=owner):
            with pytest.raises(PreflightError) as exc:
                testbed.up(second, name=clashing)
            message = str(exc.value)
            assert f"belongs to instance '{owner}'" in message, message
            assert f"instance '{clashing}' is already up" not in message, message
            assert not state.instance_dir(clashing).exists()
    finally:
        for name in (owner, clashing):
            assert leftovers(name) == [], name


def test_failure_half_way_rolls_back_everything(write_topology, clean_instance):
    broken = PLAIN.replace("  r2: {kind: router}",
                           "  r2: {kind: router, sysctls: {net.ipv4.tcp_ecn: 99}}")
    with pytest.raises(RealizeError, match="net.ipv4.tcp_ecn=99"):
        testbed.up(write_topology(broken), name=clean_instance)
    assert leftovers(clean_instance) == []


def test_processes_started_in_nodes_end_with_down(write_topology, clean_instance):
    with testbed.up(write_topology(PLAIN), name=clean_instance) as net:
        proc = net["h1"].popen(["sleep", "300"])
    assert proc.wait(timeout=5) != 0


def test_down_works_from_the_kernel_when_the_state_file_is_gone(write_topology, clean_instance):
    run_cli("up", str(write_topology(PLAIN)), "--name", clean_instance)
    state.Journal(clean_instance).remove()
    assert len(leftovers(clean_instance)) == 5
    out = run_cli("down", "--name", clean_instance).stdout
    assert "removed 5 namespaces" in out


def test_a_state_file_of_an_older_version_is_refused_and_down_still_works(write_topology,
                                                                         clean_instance):
    """An instance brought up by the previous version (state.json version 1, as
    tests/data/state-v1.json): readers say so, naming the file; down works."""
    run_cli("up", str(write_topology(PLAIN)), "--name", clean_instance)
    old = json.loads((Path(__file__).parents[1] / "data" / "state-v1.json").read_text())
    old["instance"] = clean_instance
    path = state.Journal(clean_instance).state_file
    path.write_text(json.dumps(old, indent=1, sort_keys=True))
    for argv in (["exec", "--name", clean_instance, "h1", "--", "true"],
                 ["link", "show", "--name", clean_instance]):
        proc = run_cli(*argv, check=False)
        assert proc.returncode == 1, (argv, proc.stderr)
        assert f"{path} was written by an older version of testbed (state version 1)" \
            in proc.stderr and f"`testbed down --name {clean_instance}` still" in proc.stderr
    shown = run_cli("status", "--name", clean_instance).stdout
    assert "incomplete" in shown and str(path) in shown, shown
    out = run_cli("down", "--name", clean_instance).stdout
    assert "removed 5 namespaces" in out and leftovers(clean_instance) == []


def _foreign_namespaces(tag: str) -> list[str]:
    """Namespaces testbed does not own, one of them named like ours."""
    names = [f"tb-{tag}-h1", f"foreign{tag}"]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    return names


def test_kill_9_during_up_then_clean_removes_it_and_spares_foreign(tmp_path, clean_instance):
    foreign = _foreign_namespaces(f"f{os.getpid()}")
    try:
        cmd = [sys.executable, "-m", "testbed", "up", str(TOPOLOGIES / "line.yaml"),
               "--set", "routers=400", "--name", clean_instance]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = state.Journal(clean_instance)
        wait_for(lambda: len(journal.namespaces()) >= 50 or proc.poll() is not None,
                 what="up to be half way")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert leftovers(clean_instance), "kill -9 came too late to test anything"
        # what a plain `clean` would remove: the killed instance, never the foreign ones
        listed = run_cli("clean", "--dry-run").stdout
        assert f"{clean_instance}:" in listed
        assert not any(name in listed for name in foreign)
        # (--name keeps this test from cleaning up other testbeds running on this machine)
        out = run_cli("clean", "--name", clean_instance).stdout
        assert f"cleaned {clean_instance}" in out
        assert leftovers(clean_instance) == []
        assert all(netns.exists(name) for name in foreign)
    finally:
        for name in foreign:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_sigterm_during_up_rolls_back_without_clean(clean_instance):
    cmd = [sys.executable, "-m", "testbed", "up", str(TOPOLOGIES / "line.yaml"),
           "--set", "routers=400", "--name", clean_instance]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = state.Journal(clean_instance)
    wait_for(lambda: len(journal.namespaces()) >= 50 or proc.poll() is not None,
             what="up to be half way")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err     # as a shell reports SIGTERM
    assert "terminated; what was being built has been removed" in err
    assert leftovers(clean_instance) == []


def test_exec_of_a_missing_command_exits_127(write_topology, clean_instance):
    with testbed.up(write_topology(PLAIN), name=clean_instance):
        proc = run_cli("exec", "--name", clean_instance, "h1", "--", "no-such-command-xyz",
                       check=False)
        assert proc.returncode == 127, proc.stderr
        assert "no-such-command-xyz: command not found (in node h1)" in proc.stderr
        ok = run_cli("exec", "--name", clean_instance, "h1", "--", "sh", "-c", "exit 7",
                     check=False)
        assert ok.returncode == 7                     # the command's own status passes through
        # --name after NODE is exec's option (it was passed to the command: "--name: not found")
        after = run_cli("exec", "h1", "--name", clean_instance, "--", "sh", "-c", "echo $0",
                        "--name", check=False)
        assert after.returncode == 0 and after.stdout.split() == ["--name"], after


def test_dumbbell_with_emulated_bottleneck(clean_instance):
    with testbed.up(TOPOLOGIES / "dumbbell.yaml", name=clean_instance,
                    variables={"delay": "10ms"}) as net:
        assert net.link_backend in ("netem", "userspace")
        out = net["h1"].run(["ping", "-c", "3", "-i", "0.2", "h3"]).stdout
        avg = float(out.strip().splitlines()[-1].split("/")[4])
        assert 19.5 < avg < 30, out          # 10 ms each way over the bottleneck
        net.check_links()
        shown = json.loads(run_cli("status", "--name", clean_instance, "--json").stdout)
        [link] = [l for l in shown["instances"][0]["links"] if l["name"] == "r1-r2"]
        assert [(d["from"], d["to"], d["impairment"]["delay_s"], d["impairment"]["rate_bps"])
                for d in link["directions"]] == [("r1", "r2", 0.01, 100e6), ("r2", "r1", 0.01, 100e6)]
        [edge] = [l for l in shown["instances"][0]["links"] if l["name"] == "h1-r1"]
        assert [d["impairment"] for d in edge["directions"]] == [{}, {}]
    assert leftovers(clean_instance) == []


def test_unavailable_congestion_control_lists_the_available_ones(write_topology, clean_instance):
    topo = write_topology(PLAIN.replace("h3: {cc: cubic}", "h3: {cc: nosuchcc}"))
    with pytest.raises(testbed.PreflightError) as info:
        testbed.up(topo, name=clean_instance)
    message = str(info.value)
    assert "'nosuchcc' is not available" in message
    for cc in sysctl.available_ccs():
        assert cc in message


def test_clean_with_name_touches_only_that_instance(write_topology, instance_name):
    topo = write_topology(PLAIN)
    keep, drop = instance_name + "k", instance_name + "d"
    run_cli("up", str(topo), "--name", keep)
    run_cli("up", str(topo), "--name", drop)
    try:
        out = run_cli("clean", "--name", drop).stdout
        assert f"cleaned {drop}" in out and keep not in out
        assert leftovers(drop) == []
        assert len(leftovers(keep)) == 6          # 5 namespaces + the state directory
    finally:
        run_cli("down", "--name", keep)
    assert leftovers(keep) == []
