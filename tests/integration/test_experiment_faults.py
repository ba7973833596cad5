"""Faults during a run, on real namespaces (root): each gives one clear message,
a non-zero exit, a result.json marked partial when a run had started, and
leaves nothing behind (``clean_instance`` checks namespaces and state; the
run's own processes, listed in raw/processes.json, must all be gone).

Processes are found by the pids the run recorded, never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tb_helpers import leftovers, wait_for

import testbed
from testbed.errors import WorkloadError
from testbed.run.flows import BASE_PORT
from testbed.run.workload import run_workload

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

WORKLOAD = """\
variables:
  rate: 20mbit
  delay: 5ms
  loss: 0%
---
name: it-fault
topology: {topo}
duration: {duration}
capture: {{enabled: false}}
flows:
  - {{name: bulk, from: h1, to: h3, cc: cubic}}
"""


def write(tmp_path: Path, duration: str = "3s") -> Path:
    p = tmp_path / "wl.yaml"
    p.write_text(WORKLOAD.format(topo=REPO / "topologies" / "dumbbell.yaml", duration=duration))
    return p


def run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("*/*/result.json"))


def recorded(run_dir_glob: Path) -> list[dict]:
    """The processes the (only) run under ``run_dir_glob`` has recorded so far."""
    files = list(run_dir_glob.glob("*/*/raw/processes.json"))
    if not files:
        return []
    try:
        return json.loads(files[0].read_text())
    except (OSError, json.JSONDecodeError):
        return []  # being replaced right now


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not running; anything else with this pid is
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def assert_processes_gone(run_dir: Path) -> None:
    procs = json.loads((run_dir / "raw" / "processes.json").read_text())
    assert procs, "the run recorded no processes"
    still = [p for p in procs if alive(p["pid"])]
    assert not still, f"left running: {still}"


def test_server_killed_mid_run_fails_that_flow_and_keeps_partial_results(tmp_path, clean_instance):
    out = tmp_path / "res"
    killed: list[int] = []

    def kill_server() -> None:
        wait_for(lambda: any(p["role"] == "client" for p in recorded(out)), 60, "the client to start")
        time.sleep(1.0)  # let data flow first
        server = next(p for p in recorded(out) if p["role"] == "server" and p["flow"] == "bulk")
        os.kill(server["pid"], signal.SIGKILL)
        killed.append(server["pid"])

    killer = threading.Thread(target=kill_server, daemon=True)
    killer.start()
    with pytest.raises(WorkloadError) as exc:
        run_workload(write(tmp_path, "4s"), output=out, name=clean_instance, progress=False)
    killer.join(5)
    assert killed
    message = str(exc.value)
    assert exc.value.exit_code != 0
    assert "flow failed: bulk" in message and "killed by SIGKILL" in message, message
    assert f"pid {killed[0]}" in message and "partial results in" in message
    [run_dir] = run_dirs(out)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and result["partial"] is True
    flow = result["flows"][0]
    assert flow["ok"] is False and "killed by SIGKILL" in flow["error"]
    assert flow["tcp_info_samples"] > 0          # what was measured before the kill is kept
    assert (run_dir / "raw" / "bulk.client.json").stat().st_size > 0
    assert_processes_gone(run_dir)
    assert not leftovers(clean_instance)


def test_port_in_use_on_the_receiver_is_named_and_nothing_starts(tmp_path, clean_instance):
    out = tmp_path / "res"
    with testbed.up(REPO / "topologies" / "dumbbell.yaml", name=clean_instance,
                    variables={"rate": "20mbit", "delay": "5ms"}) as net:
        with net.nodes["h3"].enter():
            squatter = socket.socket()
        try:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("0.0.0.0", BASE_PORT))
            squatter.listen()
            with pytest.raises(WorkloadError) as exc:
                run_workload(write(tmp_path), output=out, testbed_name=clean_instance,
                             progress=False)
        finally:
            squatter.close()
        message = str(exc.value)
        assert f"tcp port {BASE_PORT} on h3 is already in use" in message, message
        assert exc.value.exit_code != 0
        [run_dir] = run_dirs(out)
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "failed" and result["partial"] is True
        assert "already in use" in result["error"]
        assert not (run_dir / "raw" / "processes.json").exists()  # no server was started
        assert "h3" in json.loads((run_dir / "manifest.json").read_text())["nodes_before"]
    assert not leftovers(clean_instance)


def test_missing_driver_binary_names_the_package_and_builds_nothing(tmp_path, clean_instance):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty), PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "testbed", "run", str(write(tmp_path)),
                        "--name", clean_instance, "--output", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 3, p.stderr
    assert "iperf3 is not installed; install it with 'apt-get install iperf3'" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr    # one line, all problems in it
    assert not (tmp_path / "res").exists()
    assert not leftovers(clean_instance)


def test_ctrl_c_mid_run_keeps_partial_results_and_tears_down(tmp_path, clean_instance):
    out = tmp_path / "res"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # a session of its own: SIGINT goes to the whole group, as Ctrl-C in a terminal does
    p = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(write(tmp_path, "6s")),
                          "--name", clean_instance, "--output", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    try:
        wait_for(lambda: any(r["role"] == "client" for r in recorded(out)) or p.poll() is not None,
                 60, "the client to start")
        assert p.poll() is None, p.communicate()
        time.sleep(1.0)
        os.killpg(p.pid, signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr and "partial results are kept" in stderr
    [run_dir] = run_dirs(out)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and result["partial"] is True
    assert "SIGINT" in result["error"]
    for name in ("workload.yaml", "manifest.json", "tcp_info.csv", "host.csv",
                 "raw/bulk.client.json", "raw/bulk.server.json", "raw/tcp_info.spool"):
        assert (run_dir / name).exists(), name
    [flow] = result["flows"]
    assert flow["name"] == "bulk" and flow["tcp_info_samples"] > 0 and flow["bytes"] > 0
    assert "processes" in json.loads((run_dir / "manifest.json").read_text())
    assert_processes_gone(run_dir)
    assert not leftovers(clean_instance)


def test_unreachable_flow_target_is_reported_before_traffic(tmp_path, clean_instance):
    out = tmp_path / "res"
    with pytest.raises(WorkloadError) as exc:
        run_workload(write(tmp_path), variables={"loss": "100%"}, output=out,
                     name=clean_instance, progress=False)
    message = str(exc.value)
    assert "h1 cannot reach h3" in message and "ping failed" in message, message
    [run_dir] = run_dirs(out)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "failed" and result["partial"] is True
    assert "cannot reach" in result["error"] and result["flows"] == []
    assert not (run_dir / "raw" / "processes.json").exists()
    assert not leftovers(clean_instance)


@pytest.mark.parametrize("driver", ["iperf3", "builtin"])
def test_a_flow_whose_first_three_syns_are_lost_still_runs(tmp_path, clean_instance, driver):
    """On a lossy link a SYN can be lost more than once; TCP resends it (here at 1, 2, 3 s)
    and the flow must then run for its whole duration, not fail on a short connect timeout
    (iperf3 had 3 s, the builtin agent 5 s and a clock that started before the handshake)."""
    out = tmp_path / "res"
    wl = write(tmp_path, "2s")
    wl.write_text(wl.read_text().replace("cc: cubic}", f"cc: cubic, driver: {driver}}}"))
    with testbed.up(REPO / "topologies" / "dumbbell.yaml", name=clean_instance,
                    variables={"rate": "20mbit", "delay": "5ms"}) as net:
        for _ in range(3):  # each rule drops the first SYN that reaches it, then no other
            net.nodes["h3"].run(["iptables", "-w", "-t", "raw", "-I", "PREROUTING", "1", "-p",
                                 "tcp", "--syn", "--dport", str(BASE_PORT), "-m", "statistic",
                                 "--mode", "nth", "--every", "100000", "--packet", "0",
                                 "-j", "DROP"])
        [run_dir] = run_workload(wl, output=out, testbed_name=clean_instance, progress=False)
        table = net.nodes["h3"].run(["iptables", "-w", "-t", "raw", "-L", "PREROUTING", "-v",
                                     "-x", "-n"]).stdout
        drops = [int(line.split()[0]) for line in table.splitlines() if "DROP" in line]
        assert drops == [1, 1, 1], table
    result = json.loads((run_dir / "result.json").read_text())
    flow = result["flows"][0]
    assert result["status"] == "complete" and flow["ok"], flow.get("error")
    assert flow["goodput_bps"] > 1e6, flow
    assert not leftovers(clean_instance)
