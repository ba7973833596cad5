"""The link engine's bottleneck queue (pure): rate, tail drop, CoDel, RED, ECN marking."""

import random
import struct

from testbed.emulation.bottleneck import (DROP, MARK, SEND, Bottleneck, BottleneckConfig,
                                          is_ect, mark_ce)

MS = 1_000_000


def test_a_fifo_serves_at_the_rate_and_drops_at_the_tail():
    q = Bottleneck(BottleneckConfig(rate_bps=10e6, limit_bytes=5 * 1250))
    got = [q.arrive(0, 1250, False) for _ in range(7)]
    # 1250 B at 10 Mbit/s: 1 ms each, one after another; one in transmission and five
    # waiting fill the buffer, the 7th does not fit
    assert got[:6] == [(SEND, (i + 1) * MS) for i in range(6)] and got[6] == (DROP, 0)
    assert q.arrive(2 * MS, 1250, False) == (SEND, 7 * MS)   # two have left by then


def overload(q: Bottleneck, seconds: float, ect: bool) -> list[int]:
    """Twice the rate for ``seconds``: what each packet got."""
    out, t = [], 0
    while t < seconds * 1e9:
        out.append(q.arrive(int(t), 1250, ect)[0])
        t += 0.5 * MS              # 1250 B every 0.5 ms: 20 Mbit/s into 10 Mbit/s
    return out


def test_codel_drops_once_the_sojourn_stays_above_target_for_an_interval():
    q = Bottleneck(BottleneckConfig(rate_bps=10e6, limit_bytes=10**7, aqm="codel"))
    got = overload(q, 2.0, ect=False)
    first = got.index(DROP)
    # packet k leaves the queue at k ms after 0.5 k ms in it: above the 5 ms target from
    # k = 10 on, and CoDel waits one interval (100 ms) of dequeue time before its first drop
    assert first == 110, first
    assert q.counters["aqm_drops"] > 20 and q.counters["tail_drops"] == 0
    # then the control law: the next drop interval/sqrt(count) of dequeue time later
    # (1 ms per packet sent here): 100, 70.7, 57.7, 50 ms
    drops = [i for i, g in enumerate(got) if g == DROP]
    sent_between = [b - a - 1 for a, b in zip(drops, drops[1:])]
    assert [round(x / 5) * 5 for x in sent_between[:4]] == [100, 70, 60, 50], sent_between


def test_with_ecn_codel_marks_ect_packets_instead_of_dropping():
    q = Bottleneck(BottleneckConfig(rate_bps=10e6, limit_bytes=10**7, aqm="codel", ecn=True))
    got = overload(q, 2.0, ect=True)
    assert DROP not in got and got.count(MARK) == q.counters["marks"] > 20
    not_ect = Bottleneck(BottleneckConfig(rate_bps=10e6, limit_bytes=10**7, aqm="codel",
                                          ecn=True))
    assert DROP in overload(not_ect, 2.0, ect=False)


def test_red_signals_once_the_average_backlog_passes_its_threshold():
    q = Bottleneck(BottleneckConfig(rate_bps=10e6, limit_bytes=200 * 1250, aqm="red"),
                   random.Random(1))
    got = overload(q, 2.0, ect=False)
    assert q.counters["aqm_drops"] > 0
    assert q.counters["tail_drops"] < q.counters["aqm_drops"] and got[:30].count(DROP) == 0


def checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(tos: int) -> bytearray:
    header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 60, 7, 0, 64, 6, 0,
                                   bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])))
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return header + bytearray(40)


def test_marking_sets_ce_and_keeps_the_ipv4_checksum_valid():
    for tos in (0x01, 0x02, 0xB9, 0xFE):
        packet = ipv4(tos)
        assert is_ect(packet) and mark_ce(packet)
        assert packet[1] == tos | 3 and checksum(bytes(packet[:20])) == 0
    plain = ipv4(0xB8)
    assert not is_ect(plain) and not mark_ce(plain) and plain == ipv4(0xB8)
    six = bytearray([0x60, 0x10, 0, 0]) + bytearray(36)   # traffic class 0x01: ECT(1)
    assert is_ect(six) and mark_ce(six) and (six[1] >> 4) & 3 == 3
