"""FQ-CoDel in the link engine (pure): flows, DRR, per-flow CoDel, the fattest-flow drop."""

import random
import struct

from testbed.emulation.bottleneck import DROP, MARK, SEND, BottleneckConfig
from testbed.emulation.fqcodel import FqCoDel, flow_key

MS = 1_000_000


def fq(limit_bytes: int = 10**8, **kw) -> FqCoDel:
    return FqCoDel(BottleneckConfig(rate_bps=10e6, limit_bytes=limit_bytes, aqm="fq_codel", **kw),
                   random.Random(3))


def run(q: FqCoDel, arrivals: list[tuple[int, int, int, bytes, bool]], until: int):
    """Drive ``q`` like the engine: catch up the dequeues before each arrival. Returns
    {pid: (verdict, left)} and the ids dropped at enqueue."""
    got, limit_drops = {}, []
    for at, pid, size, key, ect in sorted(arrivals):
        for p, verdict, left in q.advance(at):
            got[p] = (verdict, left)
        limit_drops += q.enqueue(at, pid, size, key, ect)
        for p, verdict, left in q.advance(at):
            got[p] = (verdict, left)
    for p, verdict, left in q.advance(until):
        got[p] = (verdict, left)
    return got, limit_drops


def test_an_idle_link_sends_at_once_and_serialises_at_the_rate():
    q = fq()
    got, _ = run(q, [(0, 1, 1250, b"a", False), (0, 2, 1250, b"a", False)], 10 * MS)
    assert got == {1: (SEND, 1 * MS), 2: (SEND, 2 * MS)}
    assert q.next_dequeue() is None and q.status()["sent"] == 2


def test_a_sparse_flow_gets_through_a_heavy_one_at_once_and_two_heavy_ones_share():
    q = fq()
    arrivals, pid = [], 0
    for i in range(4000):                   # 20 Mbit/s of bulk into 10 Mbit/s for 2 s
        pid += 1
        arrivals.append((i * MS // 2, pid, 1250, b"bulk", False))
    pings = []
    for i in range(20):                      # a 100-byte probe every 100 ms
        pid += 1
        pings.append(pid)
        arrivals.append((i * 100 * MS + 7, pid, 100, b"ping", False))
    sent_at = {p[1]: p[0] for p in arrivals}
    got, _ = run(q, arrivals, 10**10)
    ping_delay = [got[p][1] - sent_at[p] for p in pings]
    bulk_delay = [left - sent_at[p] for p, (v, left) in got.items() if v == SEND and
                  p not in pings and sent_at[p] > 1e9]
    # a new flow waits at most for the packet in transmission (1 ms) and its own 0.08 ms;
    # the first also for the bulk flow's first quantum (it was new too then)
    assert max(ping_delay[1:]) < 1.2 * MS and ping_delay[0] < 2.2 * MS, ping_delay
    assert min(bulk_delay) > 3 * MS and q.counters["aqm_drops"] > 0
    two = fq()
    arrivals = [(i * MS // 2, i, 1250, bytes([i % 2]), False) for i in range(4000)]
    got, _ = run(two, arrivals, int(2e9))     # what left in the first 2 s: half each
    by_flow = [sum(1 for p, (v, left) in got.items() if v == SEND and p % 2 == f and
                   left <= 2e9) for f in (0, 1)]
    assert abs(by_flow[0] - by_flow[1]) <= 2 and sum(by_flow) >= 1990, by_flow


def test_per_flow_codel_drops_or_with_ecn_marks_only_the_flow_that_queues():
    for ecn in (False, True):
        q = fq(ecn=ecn)
        arrivals = [(i * MS // 2, i, 1250, b"bulk", True) for i in range(4000)]
        arrivals += [(i * 5 * MS + 3, 10**6 + i, 200, b"light", True) for i in range(400)]
        got, _ = run(q, arrivals, 10**10)
        signalled = {p for p, (v, _l) in got.items() if v == (MARK if ecn else DROP)}
        assert len(signalled) > 20 and all(p < 10**6 for p in signalled)
        assert q.counters["marks" if ecn else "aqm_drops"] == len(signalled)
        assert q.counters["aqm_drops" if ecn else "marks"] == 0
        # CoDel waits an interval (100 ms of dequeue time) with the delay above 5 ms
        assert min(signalled) > 100


def test_over_the_limit_the_fattest_flow_loses_half_its_backlog_from_the_head():
    q = fq(limit_bytes=20 * 1000)
    q.link_free = 10**9                        # the link is busy: nothing leaves meanwhile
    for i in range(3):
        assert q.enqueue(0, 100 + i, 1000, b"small", False) == []
    drops = []
    for i in range(17):
        drops += q.enqueue(0, i, 1000, b"fat", False)
    assert drops == [] and q.backlog == 20_000
    # over 20 kB: the fat flow (now 18 kB) loses half of it from its head, not the new packet
    assert q.enqueue(0, 17, 1000, b"fat", False) == list(range(9))
    assert q.backlog == 12_000 and q.counters["tail_drops"] == 9
    assert sorted(q.held_ids()) == list(range(9, 18)) + [100, 101, 102]
    limited = fq(limit_packets=4)
    limited.link_free = 10**9
    got = [limited.enqueue(0, i, 100, b"x" if i else b"y", False) for i in range(5)]
    assert got[:4] == [[], [], [], []] and got[4] == [1, 2]


def ipv4(proto: int, ports: bytes, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, frag, 64, proto, 0,
                       bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + ports + bytes(16)


def ipv6(nexthdr: int, rest: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(rest), nexthdr, 64,
                       bytes(15) + b"\x01", bytes(15) + b"\x02") + rest


def test_flows_are_the_5_tuple_for_tcp_and_udp_and_addresses_for_the_rest():
    tcp_a, tcp_b = ipv4(6, b"\x10\x00\x00\x50"), ipv4(6, b"\x10\x01\x00\x50")
    assert flow_key(tcp_a) != flow_key(tcp_b)
    assert flow_key(ipv4(17, b"\x10\x00\x00\x50")) != flow_key(tcp_a)
    assert flow_key(ipv4(1, b"\x08\x00\x00\x01")) == flow_key(ipv4(1, b"\x08\x00\x00\x02"))
    # fragments of one datagram share a flow (only the first has the ports)
    assert flow_key(ipv4(17, b"\x10\x00\x00\x50", 0x2000)) == \
        flow_key(ipv4(17, b"\x99\x99\x99\x99", 0x0010))
    six_a, six_b = ipv6(6, b"\x10\x00\x00\x50" + bytes(16)), ipv6(6, b"\x10\x01\x00\x50" + bytes(16))
    assert flow_key(six_a) != flow_key(six_b) and flow_key(six_a).startswith(b"\x06")
    # a hop-by-hop header before UDP: the ports behind it still count
    hop = bytes([17, 0]) + bytes(6)
    assert flow_key(ipv6(0, hop + b"\x10\x00\x00\x35")) != flow_key(ipv6(0, hop + b"\x10\x01\x00\x35"))
    assert flow_key(b"\x00" * 10) == b""
