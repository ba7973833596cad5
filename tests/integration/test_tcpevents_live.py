"""The tcp events collector against real packets between two namespaces.

Each test builds its own pair of namespaces (``tcpevents_net``), starts the
collector on the receiver's port, runs a flow, and checks what the kernel's
tracepoints said against what the socket itself says (``tcp_info``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from tcpevents_net import make_pair, remove_pair

from testbed.collect import tcpevents, tcpevents_parse
from testbed.kernel import tracefs

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("tracefs_root")]


@pytest.fixture
def pair():
    made = make_pair()
    yield made
    remove_pair(made)


@pytest.fixture
def collect(tmp_path):
    """``collect(port) -> (collector, t0)``, started; after the test, proof that the trace
    instance is gone."""
    made: list[tcpevents.TcpEventsCollector] = []

    def start(port: int, **kwargs) -> tuple[tcpevents.TcpEventsCollector, float]:
        name = f"{tracefs.PREFIX}ev{os.getpid()}.{port}"
        collector = tcpevents.TcpEventsCollector(tmp_path / "journal", name, frozenset({port}),
                                                 tmp_path / f"events{port}.spool", **kwargs)
        t0 = time.monotonic()
        collector.start()
        made.append(collector)
        return collector, t0
    yield start
    root = tracefs.mount_point()
    for collector in made:
        collector.stop()
        assert collector.name not in os.listdir(root / "instances")
        assert collector.error is None


def _port() -> int:
    return 30000 + os.getpid() % 20000


def _decode(collector: tcpevents.TcpEventsCollector, t0: float) -> tcpevents_parse.Decoded:
    stats = collector.stop()
    assert collector.error is None
    assert stats.total("dropped") == 0 and stats.total("overrun") == 0
    decoded = tcpevents_parse.decode_spool(collector.spool.read_bytes(), t0)
    assert decoded.unreadable_bytes == 0 and decoded.unknown_records == 0 and decoded.lost == 0
    # every event the kernel handed over was decoded
    assert decoded.events + decoded.foreign == stats.total("read") > 0
    # the mono trace clock is time.monotonic(): every event falls inside the window
    assert all(0 < r["t"] < time.monotonic() - t0 for r in decoded.rows)
    return decoded


def _flow(decoded: tcpevents_parse.Decoded, sport: int) -> tuple[dict, list[dict]]:
    rows = [r for r in decoded.rows if r["sport"] == sport and r["src"] == "10.77.0.1"]
    flows = tcpevents_parse.flow_counts(rows)
    assert len(flows) == 1, flows
    return flows[0], rows


def test_retransmissions_match_tcp_info_on_a_lossy_link(pair, collect):
    port = _port()
    receiver = pair.receiver(port)
    try:
        pair.drop(port, 0.02)
        collector, t0 = collect(port)
        sent = pair.send(port, 3_000_000)
        flow, _ = _flow(_decode(collector, t0), sent["sport"])
    finally:
        receiver.kill()
        receiver.wait()
    assert sent["total_retrans"] > 5          # the link really lost packets
    # one segment per skb (gso_max_segs 1): each successful tcp_retransmit_skb is one
    # segment of total_retrans, and the sender read total_retrans after its last ACK
    assert flow["retransmissions"] == sent["total_retrans"]
    assert flow["fast_recoveries"] >= 1


def test_slow_start_grows_cwnd_ack_by_ack(pair, collect):
    port = _port()
    pair.rate("100mbit")
    receiver = pair.receiver(port)
    try:
        collector, t0 = collect(port)
        sent = pair.send(port, 2_000_000, cc="reno")   # no HyStart: slow start until a drop
        _, rows = _flow(_decode(collector, t0), sent["sport"])
    finally:
        receiver.kill()
        receiver.wait()
    acks = [r for r in rows if r["event"] == "probe"]
    assert acks and acks[0]["cwnd"] == 10 and acks[0]["ssthresh"] is None   # in slow start
    growth = []
    for before, after in zip(acks, acks[1:]):
        if after["ssthresh"] is not None:     # slow start is over
            break
        acked = (after["snd_una"] - before["snd_una"]) % (1 << 32)
        growth.append(after["cwnd"] - before["cwnd"])
        # slow start adds at most one segment per segment acknowledged (ABC), never shrinks
        assert 0 <= after["cwnd"] - before["cwnd"] <= -(-acked // 1448), (before, after)
    assert sum(1 for g in growth if g > 0) >= 20         # grows step by step, ACK by ACK
    assert 10 + sum(growth) >= 40
    assert sum(growth) == acks[len(growth)]["cwnd"] - 10


def test_outage_leaves_open_and_comes_back(pair, collect):
    port = _port()
    receiver = pair.receiver(port)
    try:
        collector, t0 = collect(port)
        sender = pair.sender(port, 0, seconds=1.0, chunk=16384, gap=0.002)
        sport = json.loads(sender.stdout.readline())["sport"]   # connected
        time.sleep(0.3)
        outage = time.monotonic() - t0
        pair.drop(port)                        # the outage: every data segment dropped
        time.sleep(0.05)
        pair.drop(port, delete=True)
        sender.communicate(timeout=60)
        _, rows = _flow(_decode(collector, t0), sport)
    finally:
        receiver.kill()
        receiver.wait()
    changes = [(r["t"], r["ca_state"]) for r in rows if r["event"] == "cong_state_set"]
    # (a loaded host can reorder enough for a spurious recovery before the outage: not ours)
    after = [s for t, s in changes if t > outage]
    bad = [i for i, s in enumerate(after) if s in ("recovery", "loss")]
    assert bad, (outage, changes)
    assert "open" in after[bad[0]:], (outage, changes)      # and back to open after it
    print("outage at", outage, "state changes:", changes)


def test_probe_names_what_is_missing():
    found = tracefs.probe(("tcp/tcp_probe", "tcp/no_such_event"))
    assert found.usable and found.events == {"tcp/tcp_probe": True, "tcp/no_such_event": False}
    assert any("tcp/no_such_event" in p for p in found.problems)


def test_owned_instances_survive_a_crash_and_foreign_ones_are_left(tmp_path):
    root = tracefs.mount_point()
    ours = f"{tracefs.PREFIX}ev{os.getpid()}.crash"
    foreign = f"ev{os.getpid()}-foreign"
    tracefs.create(root, tmp_path, ours)       # as if the run was killed -9 right after
    (root / "instances" / foreign).mkdir()
    try:
        assert tracefs.journalled(tmp_path) == [ours]
        assert tracefs.owned_instances(root, f"{tracefs.PREFIX}ev{os.getpid()}.") == [ours]
        assert foreign not in tracefs.owned_instances(root, tracefs.PREFIX, tmp_path)
        with pytest.raises(ValueError):
            tracefs.remove(root, foreign)
        assert tracefs.remove(root, ours) and not tracefs.remove(root, ours)
        assert ours not in tracefs.owned_instances(root, tracefs.PREFIX, tmp_path)
    finally:
        tracefs.remove(root, ours)
        (root / "instances" / foreign).rmdir()


class StarvedCollector(tcpevents.TcpEventsCollector):
    """A reader that gets no CPU until ``stop``: the ring buffer must fill and say so."""

    def _drain(self, cpu, fd, size, layout, write):
        if self._stop.is_set():
            super()._drain(cpu, fd, size, layout, write)


def test_a_full_buffer_is_counted_not_hidden(pair, tmp_path):
    port = _port()
    receiver = pair.receiver(port)
    collector = StarvedCollector(tmp_path / "journal", f"{tracefs.PREFIX}ev{os.getpid()}.full",
                                 frozenset({port}), tmp_path / "spool", buffer_kb=16)
    try:
        t0 = time.monotonic()
        collector.start()
        pair.send(port, 20_000_000)
        stats = collector.stop()
    finally:
        collector.stop()
        receiver.kill()
        receiver.wait()
    assert collector.error is None
    decoded = tcpevents_parse.decode_spool(collector.spool.read_bytes(), t0)
    # overwrite off: the buffer keeps the first events and counts what did not fit
    assert stats.total("dropped") > 0 and stats.as_dict()["dropped"] == stats.total("dropped")
    assert 0 < decoded.events < stats.total("dropped")
    assert decoded.unreadable_bytes == 0


def test_a_failed_start_leaves_no_instance(tmp_path):
    name = f"{tracefs.PREFIX}ev{os.getpid()}.failed"
    collector = tcpevents.TcpEventsCollector(tmp_path / "journal", name, frozenset(),
                                             tmp_path / "spool")
    with pytest.raises(ValueError, match="at least one port"):
        collector.start()          # the filter is made after the instance
    assert tracefs.journalled(tmp_path / "journal") == [name]
    assert name not in os.listdir(tracefs.mount_point() / "instances")


def test_down_removes_the_instance_of_a_run_killed_with_sigkill(tmp_path):
    lab = f"ev{os.getpid()}k"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from testbed.collect.tcpevents import TcpEventsCollector\n"
        "from testbed.kernel import tracefs\n"
        f"c = TcpEventsCollector(Path({str(tmp_path)!r}), tracefs.instance_name({lab!r}, 'r1'),\n"
        f"                       frozenset({{{_port()}}}), Path({str(tmp_path / 'spool')!r}))\n"
        "c.start()\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "started"
    finally:
        proc.kill()
        proc.wait()
    root = tracefs.mount_point()
    name = tracefs.instance_name(lab, "r1")
    assert name in os.listdir(root / "instances")          # left behind by the kill
    assert tracefs.remove_owned(lab, tmp_path) == [name]    # what down does
    assert name not in os.listdir(root / "instances")
