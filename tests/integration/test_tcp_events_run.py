"""Kernel TCP events in a real run (root, tracefs): on by default, tcp_events.csv
on the run's clock, per-flow counts in result.json that agree with tcp_info,
and ``down``/``clean`` remove a run's trace instance after a kill -9."""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tb_helpers import leftovers, run_cli, wait_for
from testbed.kernel import tracefs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.usefixtures("tcp_events_usable")]

TOPO = """\
name: evrun
nodes:
  h1: {kind: host}
  r1: {kind: router}
  h2: {kind: host}
links:
  - {endpoints: [h1, r1], delay: 5ms, loss: 2%, rate: 50mbit}
  - {endpoints: [r1, h2]}
"""
WORKLOAD = """\
name: it-events
topology: topo.yaml
duration: {duration}
capture: {{enabled: false}}
{sampling}flows:
  - {{name: bulk, from: h1, to: h2, cc: cubic}}
"""


def write(tmp_path: Path, duration: str = "3s", sampling: str = "") -> Path:
    (tmp_path / "topo.yaml").write_text(TOPO)
    (tmp_path / "wl.yaml").write_text(WORKLOAD.format(duration=duration, sampling=sampling))
    return tmp_path / "wl.yaml"


def ours(name: str) -> list[str]:
    """The trace instances of instance ``name`` (none while tracefs is unmounted)."""
    root = tracefs.mount_point()
    if root is None:
        return []
    return [n for n in os.listdir(root / "instances") if n.startswith(f"testbed.{name}.")]


def test_a_lossy_run_records_events_that_agree_with_tcp_info(tmp_path):
    name = f"rs{secrets.token_hex(3)}"
    mounted_before = tracefs.mount_point()
    out = run_cli("run", str(write(tmp_path)), "--quiet", "--name", name,
                  "--output", str(tmp_path / "res"), timeout=120)
    run_dir = Path(out.stdout.split()[0])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete"
    assert result["summary"]["tcp_events"]["available"] is True
    assert not [x for x in result["summary"]["data_loss"] if "tcp events" in x]
    flow, = result["flows"]
    events = flow["tcp_events"]
    retrans = flow["retransmits_tcp_info"]
    assert retrans > 5                                   # the link really lost packets
    # tcp_retransmit_skb counts skbs (a TSO skb may carry more than one segment) and
    # tcp_info's last sample may come just before the last retransmission: near, not equal
    assert abs(events["retransmissions"] - retrans) <= max(3, retrans // 10), (events, retrans)
    assert events["fast_recoveries"] >= 1
    with open(run_dir / "tcp_events.csv") as f:
        rows = list(csv.DictReader(f))
    with open(run_dir / "tcp_info.csv") as f:
        samples = list(csv.DictReader(f))
    assert {r["flow"] for r in rows} == {"bulk"}
    # one clock: the events fall within the tcp_info samples' span (t0 = the run's start)
    first, last = min(float(s["t"]) for s in samples), max(float(s["t"]) for s in samples)
    times = [float(r["t"]) for r in rows]
    assert first - 0.5 < min(times) and max(times) < last + 2.0
    assert sum(r["event"] == "retransmit_skb" for r in rows) >= events["retransmissions"]
    assert ours(name) == [] and leftovers(name) == []
    assert tracefs.mount_point() == mounted_before      # a tracefs the run mounted is gone
    # and as compare metrics
    cmp = run_cli("compare", str(run_dir), "--metrics", "retransmissions,fast_recoveries",
                  "--format", "json", "--include-suspect")
    assert str(events["retransmissions"]) in cmp.stdout


def test_the_workload_can_turn_them_off(tmp_path):
    name = f"rs{secrets.token_hex(3)}"
    out = run_cli("run", str(write(tmp_path, "1s", "sampling: {tcp_events: false}\n")), "--quiet",
                  "--name", name, "--output", str(tmp_path / "res"), timeout=120)
    run_dir = Path(out.stdout.split()[0])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["summary"]["tcp_events"] == {"available": False,
                                               "why": ["sampling.tcp_events is false"]}
    assert "tcp_events" not in result["flows"][0] and not (run_dir / "tcp_events.csv").exists()


@pytest.mark.parametrize("command", ["down", "clean"])
def test_down_and_clean_remove_the_trace_instance_of_a_run_killed_with_sigkill(tmp_path, command):
    name = f"rs{secrets.token_hex(3)}"
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "run", str(write(tmp_path, "30s")),
                             "--quiet", "--name", name, "--output", str(tmp_path / "res")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ours(name) or proc.poll() is not None, timeout=60,
                 what="the run's trace instance")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert len(ours(name)) == 1                      # left behind by the kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        run_cli(command, "--name", name, check=False)
    assert ours(name) == [] and leftovers(name) == []
