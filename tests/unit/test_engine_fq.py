"""The link engine's FQ-CoDel lanes, against a recording socket (no root): packets leave in
the scheduler's order, each with its own verdict (a batch verdict would accept every lower id
too), CE-marked ones with their rewritten payload."""

from __future__ import annotations

import random
import struct

from testbed.emulation import nfqueue
from testbed.emulation.delayline import DelayConfig, DelayLine
from testbed.emulation.engine import Engine, Lane
from testbed.emulation.fqcodel import FqCoDel

from engine_fakes import RecordingSocket

MS = 1_000_000
FD = 999


def verdicts(sent: list[bytes]) -> list[tuple[int, int, int, bytes | None]]:
    """(message type, verdict, id, new payload) of every netlink message sent."""
    out = []
    for data in sent:
        offset = 0
        while offset < len(data):
            length, msg_type = struct.unpack_from("=IH", data, offset)
            code, pid = struct.unpack_from(">II", data, offset + 16 + 4 + 4)
            payload = None
            attr = offset + 16 + 4 + 12
            if attr < offset + length:
                alen, _atype = struct.unpack_from("=HH", data, attr)
                payload = data[attr + 4:attr + alen]
            out.append((msg_type & 0xFF, code, pid, payload))
            offset += length
    return out


def ipv4(proto: int, sport: int, size: int, tos: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, tos, size, 0, 0, 64, proto, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return header + struct.pack("!HH", sport, 80) + bytes(size - 24)


def packet_message(pid: int, packet: bytes) -> bytearray:
    attrs = (nfqueue.nla(nfqueue.NFQA_PACKET_HDR, struct.pack(">IHB", pid, 0x0800, 4))
             + nfqueue.nla(nfqueue.NFQA_PAYLOAD, packet))
    return bytearray(nfqueue.message(nfqueue.NFQNL_MSG_PACKET, 5, attrs))


def engine_with_lane(tmp_path, config: DelayConfig) -> tuple[Engine, Lane, RecordingSocket]:
    engine = Engine(str(tmp_path / "c"), str(tmp_path / "s"), seed=1, realtime=False)
    sock = RecordingSocket(FD)
    fq = FqCoDel(config.bottleneck(), random.Random(1))
    lane = Lane("x", 5, sock, DelayLine(config, random.Random(1)), bottleneck=fq,  # type: ignore[arg-type]
                fq=fq)
    engine.lanes[FD] = lane
    return engine, lane, sock


def arrive(engine: Engine, lane: Lane, pid: int, packet: bytes, at: int) -> None:
    buf = packet_message(pid, packet)
    assert engine.enqueue(lane, pid, buf, len(buf), at) is None   # held by the scheduler


def test_a_sparse_flow_overtakes_a_bulk_flow_and_every_packet_has_its_own_verdict(tmp_path):
    config = DelayConfig(delay_us=10_000, aqm="fq_codel", rate_bps=10e6, limit_bytes=10**7)
    engine, lane, sock = engine_with_lane(tmp_path, config)
    for pid in range(1, 11):
        arrive(engine, lane, pid, ipv4(6, 4000, 1250), 0)          # one TCP flow, 1 ms each
    arrive(engine, lane, 11, ipv4(1, 0, 100), MS // 10)              # a ping
    assert sock.sent == [] and lane.fq_due == 1 * MS                 # the link's next turn
    engine.release_due(10**12, bytearray(65536))
    got = verdicts(sock.sent)
    # the bulk flow's first quantum (two packets), then the new ping flow, then the rest
    assert [pid for _t, _v, pid, _p in got] == [1, 2, 11] + list(range(3, 11))
    assert {(t, v) for t, v, _pid, _p in got} == {(nfqueue.NFQNL_MSG_VERDICT, nfqueue.NF_ACCEPT)}
    assert lane.fq.status()["sent"] == 11 and not lane.payloads and not lane.marked


def test_ce_marks_are_decided_at_dequeue_and_sent_as_the_new_payload(tmp_path):
    config = DelayConfig(aqm="fq_codel", rate_bps=10e6, limit_bytes=10**7, ecn=True)
    engine, lane, sock = engine_with_lane(tmp_path, config)
    for pid in range(1, 301):                  # 300 ms of backlog at once: CoDel marks
        arrive(engine, lane, pid, ipv4(6, 4000, 1250, tos=0x02), 0)
    assert len(lane.payloads) == 299           # ECT: kept until their dequeue decides
    engine.release_due(10**12, bytearray(65536))
    got = verdicts(sock.sent)
    marked = [p for _t, _v, _pid, p in got if p is not None]
    assert len(got) == 300 and marked and len(marked) == lane.fq.status()["marks"]
    assert all(p[1] & 3 == 3 for p in marked) and not lane.payloads
