"""The terminal goes away, or the reader of testbed's output does, mid-command (root, real
namespaces): the testbed still comes down with everything it started (delay daemons,
traffic tools, tcpdump), the run is recorded, and the exit code says what happened.

- closing the terminal (a pty whose master is closed: SIGHUP to testbed, then EIO on
  every write) during ``run``: torn down, result ``interrupted``, exit 129;
- ``testbed run ... 2>&1 | head -1``: the progress writes fail (EPIPE); the run carries on
  to its end and tears down;
- SIGHUP during ``up``: rolled back, exit 129.

Processes are found by the pids testbed recorded (its journal, raw/processes.json),
never by name.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
from tb_helpers import leftovers, wait_for

from testbed.realize import state
from testbed.kernel import netns

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

# the bottleneck's delay runs through delay daemons (userspace backend) or netem
WORKLOAD = """\
variables:
  rate: 20mbit
  delay: 5ms
  loss: 0%
---
name: it-hangup
topology: {topo}
duration: {duration}
capture: {{enabled: true, interfaces: [bottleneck]}}
flows:
  - {{name: bulk, from: h1, to: h3, cc: cubic}}
  - {{name: agent, from: h2, to: h4, cc: cubic, driver: builtin}}
"""


def write(tmp_path: Path, duration: str) -> Path:
    p = tmp_path / "wl.yaml"
    p.write_text(WORKLOAD.format(topo=REPO / "topologies" / "dumbbell.yaml", duration=duration))
    return p


def recorded(out: Path) -> list[dict]:
    files = list(out.glob("*/*/raw/processes.json"))
    try:
        return json.loads(files[0].read_text()) if files else []
    except (OSError, json.JSONDecodeError):
        return []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def started(instance: str, out: Path) -> set[int]:
    """Every process the run has started so far: raw/processes.json (servers, clients,
    captures), its journal, and whatever runs in its namespaces (the delay daemons)."""
    return {p["pid"] for p in recorded(out)} | \
        {pid for pid, _ in state.Journal(instance).processes()} | \
        set(netns.processes_in(state.Journal(instance).namespaces()))


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "testbed", *args]


def drain(fd: int, sink: bytearray) -> threading.Thread:
    def read() -> None:
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            sink.extend(chunk)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def test_closing_the_terminal_mid_run_tears_everything_down(tmp_path, clean_instance):
    out = tmp_path / "res"
    master, slave = os.openpty()

    def controlling_terminal() -> None:     # in the child, after setsid: the pty is its tty
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    p = subprocess.Popen(cli_argv("run", str(write(tmp_path, "20s")), "--name",
                                      clean_instance, "--output", str(out)),
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=controlling_terminal)
    os.close(slave)
    shown = bytearray()
    reader = drain(master, shown)
    pids: set[int] = set()
    try:
        wait_for(lambda: sum(r["role"] == "client" for r in recorded(out)) == 2
                 or p.poll() is not None, 90, "both clients to start")
        assert p.poll() is None, shown.decode(errors="replace")
        pids = started(clean_instance, out)
        os.close(master)                     # the terminal window closes
        p.wait(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(5)
    assert p.returncode == 128 + signal.SIGHUP, shown.decode(errors="replace")
    [run_dir] = [d.parent for d in out.glob("*/*/result.json")]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "interrupted" and "SIGHUP" in result["error"]
    roles = {r["role"] for r in recorded(out)}
    assert {"server", "client", "capture"} <= roles and len(pids) > len(recorded(out))
    wait_for(lambda: not any(alive(pid) for pid in pids), 10, "every process to be gone")
    assert not leftovers(clean_instance)


def test_run_piped_into_head_runs_to_its_end_and_tears_down(tmp_path, clean_instance):
    out = tmp_path / "res"
    run = subprocess.Popen(cli_argv("run", str(write(tmp_path, "4s")), "--name",
                                        clean_instance, "--output", str(out)),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    head = subprocess.Popen(["head", "-1"], stdin=run.stdout, stdout=subprocess.PIPE)
    run.stdout.close()                       # only head reads it now
    try:
        first, _ = head.communicate(timeout=30)
        pids: set[int] = set()
        wait_for(lambda: bool(recorded(out)) or run.poll() is not None, 60, "the run to start")
        while run.poll() is None:            # whatever the run started, until it ends
            pids |= started(clean_instance, out)
            try:
                run.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert first.startswith(b"testbed: ")
    # the run went on without its progress and ended when done; printing its directory
    # at the end found no reader: the exit status a shell shows for SIGPIPE, no traceback
    assert run.returncode == 128 + signal.SIGPIPE
    [run_dir] = [d.parent for d in out.glob("*/*/result.json")]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete", result.get("error")
    assert pids and not any(alive(pid) for pid in pids)
    assert not leftovers(clean_instance)


def test_sighup_during_up_rolls_back(clean_instance):
    proc = subprocess.Popen(cli_argv("up", str(REPO / "topologies" / "line.yaml"), "--set",
                                         "routers=400", "--name", clean_instance),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = state.Journal(clean_instance)
    wait_for(lambda: len(journal.namespaces()) >= 50 or proc.poll() is not None,
             what="up to be half way")
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGHUP, err
    assert "terminated by SIGHUP; what was being built has been removed" in err
    assert leftovers(clean_instance) == []
