"""state.json and host.json under concurrent writers: a reader never sees half a file, and
read-modify-write changes of one instance (``link set`` while a schedule runs) take
turns (pure file logic in a temporary RUN_DIR)."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time

import pytest

from testbed.emulation import live
from testbed.errors import TestbedError
from testbed.realize import state


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setattr(state, "RUN_DIR", d)
    return d


def hammer(write, read, seconds: float = 1.5) -> tuple[int, list[str]]:
    """Writers of different sizes against one reader; returns (reads, problems)."""
    problems: list[str] = []
    stop = threading.Event()
    reads = 0

    def writer(n: int) -> None:
        payload = {"writer": n, "pad": "x" * (20000 * (n + 1))}
        try:
            while not stop.is_set():
                write(payload)
        except Exception as exc:  # noqa: BLE001 - any failure is what the test reports
            problems.append(f"writer {n}: {exc!r}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = read()
        reads += 1
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            problems.append(f"torn read of {len(text)} bytes")
            continue
        if len(data["pad"]) != 20000 * (data["writer"] + 1):
            problems.append("mixed content")
    stop.set()
    for t in threads:
        t.join()
    return reads, problems


def test_state_json_is_never_seen_half_written(run_dir):
    journal = state.Journal("inst")
    journal.open()
    journal.write_state({"writer": 0, "pad": "x" * 20000})
    reads, problems = hammer(journal.write_state, (journal.dir / "state.json").read_text)
    assert reads > 50 and problems == [], problems[:5]
    assert sorted(p.name for p in journal.dir.iterdir()) == ["state.json"]   # no temporaries


def test_host_json_is_never_seen_half_written(run_dir):
    state._write_host({"writer": 0, "pad": "x" * 20000})
    reads, problems = hammer(state._write_host, (run_dir / state.HOST_FILE).read_text)
    assert reads > 50 and problems == [], problems[:5]


def _increment(run_dir: str, times: int) -> None:
    from pathlib import Path
    state.RUN_DIR = Path(run_dir)
    journal = state.Journal("inst")
    for _ in range(times):
        with journal.changing():
            data = journal.read_state()
            time.sleep(0.001)           # widen the window a lost update needs
            data["count"] += 1
            journal.write_state(data)


def test_read_modify_write_changes_take_turns_across_processes(run_dir):
    journal = state.Journal("inst")
    journal.open()
    journal.write_state({"count": 0})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(str(run_dir), 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert journal.read_state() == {"count": 120}


def test_changing_an_instance_that_is_not_up_creates_nothing(run_dir):
    with pytest.raises(TestbedError, match="no testbed named 'gone' is up"):
        with state.Journal("gone").changing():
            pass
    assert not run_dir.exists()


def test_link_changes_wait_for_the_instance_lock(run_dir, monkeypatch):
    """``link set`` (live.change) and a schedule's revert (live.put) read state.json only
    once they hold the lock, so neither overwrites what the other just wrote."""
    journal = state.Journal("inst")
    journal.open()
    reads: list[str] = []
    monkeypatch.setattr(live, "read", lambda instance: reads.append(instance) or {})
    monkeypatch.setattr(live, "directions", lambda *args: [])
    monkeypatch.setattr(live, "_set", lambda *args: [])
    for call in (lambda: live.change("inst", "a-b", None), lambda: live.put("inst", [])):
        reads.clear()
        with journal.changing():
            t = threading.Thread(target=call)
            t.start()
            t.join(0.3)
            assert t.is_alive() and reads == []
        t.join(5)
        assert reads == ["inst"]


def test_per_direction_records_are_atomic_but_not_fsynced(tmp_path, monkeypatch):
    """up writes one record per emulated direction (2000 on a 1000-router line): an fsync
    each cost ~3 ms on a disk-backed /run; readers still never see half a file."""
    import os

    from testbed.emulation.common import read_state, write_state
    from testbed.files import write_atomic
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    write_state(tmp_path / "e" / "eth0.json", {"a": 1})
    assert read_state(tmp_path / "e" / "eth0.json") == {"a": 1} and synced == []
    write_atomic(tmp_path / "state.json", "{}")
    assert len(synced) == 1
    assert [p.name for p in (tmp_path / "e").iterdir()] == ["eth0.json"]   # no temp left


def test_status_says_a_tracefs_mount_among_the_host_changes():
    """host.json's tracefs entry has no 'original': status crashed with KeyError on a machine
    where a run had mounted tracefs (a fresh clone's suite found it)."""
    from testbed.instance.status import render
    text = render({"instances": [{"name": "a", "complete": False, "note": "x"}], "host_changes": {
        "tracefs": {"mounted": "/sys/kernel/tracing", "users": ["a"]},
        "net.ipv4.tcp_allowed_congestion_control": {"original": ["reno"], "added": ["cubic"],
                                                    "users": ["a"]}}})
    assert "host change: tracefs mounted /sys/kernel/tracing (for a;" in text
    assert "reno + cubic (for a;" in text
