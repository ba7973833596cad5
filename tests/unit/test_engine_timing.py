"""The link engine's hot path: release compensation (a delay is the link's whole latency)
and batched reads of id-only NFQUEUE messages."""

from __future__ import annotations

import random
import socket
import statistics
import struct

import pytest

from testbed.emulation import engine, nfqueue
from testbed.emulation.delayline import ACCEPT_NOW, DROP, DelayConfig, DelayLine
from testbed.emulation.mmsg import BatchReader


def test_the_compensation_shortens_a_delay_but_never_below_the_arrival():
    line = DelayLine(DelayConfig(delay_us=1000), random.Random(1))
    line.arrive(1, 5_000_000, early_ns=30_000)
    assert line.next_due() == 5_970_000
    short = DelayLine(DelayConfig(delay_us=10), random.Random(1))
    short.arrive(1, 5_000_000, early_ns=30_000)
    assert short.next_due() == 5_000_000     # due at its arrival, not 20 us before it


def test_the_compensation_follows_the_mean_release_lateness():
    rng = random.Random(7)
    comp = 0
    seen = []
    for _ in range(5000):
        late = int(rng.gauss(25_000, 10_000))
        comp = engine.next_compensation(comp, late)
        seen.append(comp)
    assert statistics.mean(seen[-2000:]) == pytest.approx(25_000, abs=2_000)
    # a stall counts as at most the cap, and the result stays within 0 and the cap
    assert engine.next_compensation(0, 10**9) == engine._COMP_MAX_NS >> engine._COMP_SHIFT
    assert engine.next_compensation(0, -10**9) == 0
    assert engine.next_compensation(engine._COMP_MAX_NS, 10**9) == engine._COMP_MAX_NS


def test_a_release_is_recorded_as_its_error_against_the_configured_delay(tmp_path):
    eng = engine.Engine(str(tmp_path / "c.json"), str(tmp_path / "s.json"), 1, False)
    eng.compensation = 20_000
    eng._note_release(26_000)    # 26 us after the compensated due: 6 us late
    assert eng.late == [6_000]
    assert eng.compensation == 20_000 + (6_000 >> engine._COMP_SHIFT)


def packet_message(pid: int, payload: bytes | None = None) -> bytes:
    """A NFQNL_MSG_PACKET message as the kernel sends it (header first), in META mode
    or with ``payload``."""
    attrs = nfqueue.nla(nfqueue.NFQA_PACKET_HDR, struct.pack(">IHB", pid, 0x0800, 4) + b"\0")
    if payload is not None:
        attrs += nfqueue.nla(nfqueue.NFQA_PAYLOAD, payload)
    return nfqueue.message(nfqueue.NFQNL_MSG_PACKET, 0, attrs)


def test_a_batch_read_returns_each_datagram_in_its_slot():
    reader = BatchReader(slots=4, stride=128)
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with left, right:
        assert reader.read(right.fileno()) == 0          # nothing waits: 0, no exception
        error = nfqueue.NLMSG_HDR.pack(36, nfqueue.NLMSG_ERROR, 0, 0, 0) + struct.pack(
            "=i", -1) + b"\0" * 16
        for message in (packet_message(7), packet_message(8), error, packet_message(9),
                        packet_message(10)):
            left.send(message)
        assert reader.read(right.fileno()) == 4          # at most ``slots`` per call
        ids, others = nfqueue.packet_ids(reader.buf, 4, reader.stride)
        assert ids == [7, 8, 9] and others == [2 * 128]
        assert nfqueue.ack_error(reader.buf.raw[256:256 + 128]) == 1
        assert reader.read(right.fileno()) == 1
        assert nfqueue.packet_ids(reader.buf, 1, reader.stride) == ([10], [])


def test_packets_that_came_together_share_a_due_time_in_arrival_order():
    line = DelayLine(DelayConfig(delay_us=1000), random.Random(1))
    assert line.arrive_all([3, 4, 5], 1_000_000, early_ns=20_000) == []
    assert line.release(1_979_999) is None
    assert line.release(1_980_000) == 5
    # with something random each packet is decided alone, as ``arrive`` does
    lossy = DelayLine(DelayConfig(delay_us=1000, loss=0.5, reorder=0.3), random.Random(2))
    not_held = lossy.arrive_all(list(range(1000)), 0)
    assert {action for _pid, action in not_held} == {DROP, ACCEPT_NOW}
    assert len(lossy) + len(not_held) == 1000


def verdicts(sock: socket.socket) -> list[tuple[int, int]]:
    """(message type, packet id) of every verdict the engine sent into ``sock``."""
    out = []
    while True:
        try:
            raw = sock.recv(65536)
        except BlockingIOError:
            return out
        _len, msg_type, *_ = nfqueue.NLMSG_HDR.unpack_from(raw, 0)
        out.append((msg_type & 0xFF, struct.unpack_from(">I", raw, 16 + 4 + 4 + 4)[0]))


@pytest.mark.parametrize("aqm", [None, "codel"])
def test_a_reordered_packet_leaves_alone_and_the_held_ones_stay(tmp_path, aqm):
    # a batch verdict up to a reordered packet's id would release every held packet
    eng = engine.Engine(str(tmp_path / "c.json"), str(tmp_path / "s.json"), 1, False)
    config = DelayConfig(delay_us=50_000, reorder=0.5, aqm=aqm, rate_bps=1e9,
                         limit_bytes=10**6 if aqm else 0)
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with kernel, ours:
        ours.setblocking(False)
        kernel.setblocking(False)
        lane = engine.Lane("ns", 3, ours, DelayLine(config, random.Random(5)),
                           bottleneck=engine._bottleneck(config, random.Random(5)))
        ip = bytes([0x45, 0]) + struct.pack(">H", 60) + bytes(56)
        for pid in range(1, 41):
            kernel.send(packet_message(pid, ip if aqm else None))
        eng.drain(lane, 1_000_000, bytearray(65536))
        sent = verdicts(kernel)
    assert lane.counters["packets"] == 40
    assert 0 < lane.counters["reordered"] == len(sent) < 40
    assert all(kind == nfqueue.NFQNL_MSG_VERDICT for kind, _pid in sent), sent
    assert len(lane.line) == 40 - len(sent)
