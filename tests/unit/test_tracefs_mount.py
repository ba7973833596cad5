"""tracefs mounted by testbed for tcp events is a host change like
tcp_allowed_congestion_control: recorded in host.json before the mount, kept
while an instance that used it is up, unmounted by the last down or clean; a
tracefs someone else mounted is never touched. No root: the mount calls and
the mount table are fakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.kernel import tracefs
from testbed.realize import state


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A RUN_DIR, a fake mount table and the mount calls it saw."""
    monkeypatch.setattr(state, "RUN_DIR", tmp_path)
    table: dict[str, Path | None] = {"at": None}
    calls: list[str] = []

    def mount(path: Path = tracefs.DEFAULT_MOUNT) -> None:
        assert json.loads((tmp_path / state.HOST_FILE).read_text())["tracefs"]   # record first
        calls.append(f"mount {path}")
        table["at"] = path

    def unmount(path: Path = tracefs.DEFAULT_MOUNT) -> None:
        calls.append(f"umount {path}")
        table["at"] = None
    monkeypatch.setattr(tracefs, "mount", mount)
    monkeypatch.setattr(tracefs, "unmount", unmount)
    monkeypatch.setattr(tracefs, "mount_point", lambda mounts=None: table["at"])
    return table, calls


def up(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()


def test_mounted_for_two_instances_and_unmounted_by_the_last(host, tmp_path):
    table, calls = host
    up(tmp_path, "a")
    up(tmp_path, "b")
    assert state.mount_tracefs("a") and state.mount_tracefs("b")
    assert calls == [f"mount {tracefs.DEFAULT_MOUNT}"]
    assert state.host_changes()["tracefs"]["users"] == ["a", "b"]
    assert state.release_tracefs("a") is None and table["at"] == tracefs.DEFAULT_MOUNT
    assert state.release_tracefs("b") == str(tracefs.DEFAULT_MOUNT)
    assert calls[-1] == f"umount {tracefs.DEFAULT_MOUNT}" and table["at"] is None
    assert "tracefs" not in state.host_changes()


def test_a_mount_someone_else_made_is_left_alone(host, tmp_path):
    table, calls = host
    table["at"] = Path("/sys/kernel/debug/tracing")
    up(tmp_path, "a")
    assert state.mount_tracefs("a") is False
    assert state.release_tracefs("a") is None
    assert calls == [] and table["at"] == Path("/sys/kernel/debug/tracing")


def test_clean_after_kill_9_unmounts_what_no_live_instance_uses(host, tmp_path):
    table, calls = host
    up(tmp_path, "a")
    state.mount_tracefs("a")
    (tmp_path / "a").rmdir()                 # its state is gone (clean removed it)
    assert state.release_tracefs("") == str(tracefs.DEFAULT_MOUNT)
    assert table["at"] is None


def test_a_run_without_usable_tracepoints_says_why_instead_of_a_silent_gap(monkeypatch, tmp_path):
    import contextlib
    from types import SimpleNamespace

    from testbed.run.collectors import Collectors
    from testbed.traffic import FlowPlan
    from testbed.traffic.iperf3 import Iperf3Driver
    from testbed.workload import Flow, Sampling

    def probe(events, mounts=tracefs.MOUNTS):
        return tracefs.Probe(Path("/sys/kernel/tracing"), {e: False for e in events},
                             ["this kernel has no tcp/tcp_probe tracepoint"])
    monkeypatch.setattr(tracefs, "probe", probe)
    plans = [(FlowPlan(flow=Flow("bulk", "h1", "h3"), port=5201, src_ip="10.0.0.1",
                       dst_ip="10.0.1.1", seconds=1.0, out_dir=tmp_path), Iperf3Driver())]
    for sampling, why in ((Sampling(), "this kernel has no tcp/tcp_probe tracepoint"),
                          (Sampling(tcp_events=False), "sampling.tcp_events is false")):
        col = Collectors(tmp_path)
        with contextlib.ExitStack() as stack:
            col.start_tcp_events(SimpleNamespace(name="a"), "r1", plans,
                                 SimpleNamespace(sampling=sampling, planned_seconds=1.0), stack)
        assert col.events is None and col.events_off is not None
        assert col.events_off["available"] is False and col.events_off["why"] == [why]
