"""FQ-CoDel for the link engine (the kernel's sch_fq_codel.c). Pure.

Unlike a FIFO's, a packet's turn here depends on what other flows send after
it, so nothing can be decided at arrival: ``FqCoDel`` holds the packet ids in
per-flow queues and the engine calls ``advance`` at each moment the link
becomes free (its serialisation at ``rate``), which runs the kernel's
dequeue there:

- flows are hashed (``flow_key``: addresses, protocol and, for TCP, UDP,
  SCTP, UDP-Lite and DCCP, the ports) into ``flows`` buckets (1024);
- deficit round robin with a ``quantum`` of 1514 bytes; a flow that was not
  in either list joins the new flows, which are served before the old ones;
  an emptied new flow goes to the old ones' tail while any are waiting
  (fq_codel_dequeue's pass that prevents starvation), else leaves;
- each flow has its own CoDel (``bottleneck.CoDel``) on the sojourn time at
  dequeue, against the whole queue's backlog as the kernel does; its signal
  is a drop, or a CE mark on an ECN-capable packet with ``ecn``;
- over ``limit_packets`` (when set) or ``limit_bytes`` (the buffer, the
  kernel's memory_limit), fq_codel_drop: from the head of the flow with the
  biggest backlog until half of that backlog or 64 packets have gone.

The decisions come back per packet id, in the order they leave: the engine
must give each its own verdict. Times are integer nanoseconds.
"""

from __future__ import annotations

import random
import zlib
from collections import deque

from testbed.emulation.bottleneck import (DROP, MARK, SEND, BottleneckConfig, CoDel,
                                          queue_status)

FLOWS = 1024
QUANTUM = 1514
DROP_BATCH = 64
_PORTS = frozenset((6, 17, 33, 132, 136))       # TCP, UDP, DCCP, SCTP, UDP-Lite
_IPV6_EXTENSIONS = frozenset((0, 43, 60))       # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44


def flow_key(packet: bytes | bytearray | memoryview) -> bytes:
    """What a packet's flow is hashed on: IPv4/IPv6 addresses and protocol, plus the ports
    for protocols that have them (not in a fragment). b"" for anything else."""
    if len(packet) < 20:
        return b""
    version = packet[0] >> 4
    if version == 4:
        ihl, proto = (packet[0] & 15) * 4, packet[9]
        key = bytes(packet[9:10]) + bytes(packet[12:20])
        fragment = ((packet[6] & 0x3F) << 8) | packet[7]      # MF flag or an offset
        if proto in _PORTS and not fragment and len(packet) >= ihl + 4:
            key += bytes(packet[ihl:ihl + 4])
        return key
    if version == 6 and len(packet) >= 40:
        proto, offset = packet[6], 40
        while proto in _IPV6_EXTENSIONS and len(packet) >= offset + 8:
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        key = bytes([proto]) + bytes(packet[8:40])
        if proto in _PORTS and len(packet) >= offset + 4:
            key += bytes(packet[offset:offset + 4])
        return key
    return b""


class Flow:
    """One bucket: its packets (id, bytes, enqueue time, ECN-capable), DRR deficit, CoDel."""

    __slots__ = ("packets", "backlog", "deficit", "listed", "codel")

    def __init__(self, codel: CoDel) -> None:
        self.packets: deque[tuple[int, int, int, bool]] = deque()
        self.backlog = 0
        self.deficit = 0
        self.listed = False          # in new_flows or old_flows
        self.codel = codel


class FqCoDel:
    """The queue of one direction: ``enqueue`` on arrival, ``advance`` when the link is free."""

    def __init__(self, config: BottleneckConfig, rng: random.Random | None = None,
                 flows: int = FLOWS, quantum: int = QUANTUM) -> None:
        self.flows_cnt, self.quantum = flows, quantum
        self.perturbation = (rng or random.Random()).getrandbits(32)
        self.flows: dict[int, Flow] = {}
        self.new_flows: deque[Flow] = deque()
        self.old_flows: deque[Flow] = deque()
        self.link_free = 0
        self.packets = 0
        self.backlog = 0
        self.new_flow_count = 0
        self.counters = dict.fromkeys(("sent", "sent_bytes", "tail_drops", "aqm_drops", "marks"), 0)
        self.sojourn_ns_total = 0
        self.sojourn_ns_max = 0
        self.reconfigure(config)

    def reconfigure(self, config: BottleneckConfig) -> None:
        """New rate, limits, target, interval, ecn; held packets and flow state stay."""
        self.config = config
        self.ns_per_byte = 8e9 / config.rate_bps
        for flow in self.flows.values():
            flow.codel.target, flow.codel.interval = config.target_ns, config.interval_ns

    def bucket(self, key: bytes) -> int:
        return zlib.crc32(key, self.perturbation) % self.flows_cnt

    def enqueue(self, now: int, pid: int, size: int, key: bytes, ect: bool) -> list[int]:
        """Queue a packet; the ids dropped to make room (fq_codel_drop), oldest first."""
        idx = self.bucket(key)
        flow = self.flows.get(idx)
        if flow is None:
            flow = self.flows[idx] = Flow(CoDel(self.config.target_ns, self.config.interval_ns))
        if self.packets == 0 and self.link_free < now:
            self.link_free = now                 # an idle link starts on this packet
        flow.packets.append((pid, size, now, ect))
        flow.backlog += size
        self.backlog += size
        self.packets += 1
        if not flow.listed:
            flow.listed, flow.deficit = True, self.quantum
            self.new_flows.append(flow)
            self.new_flow_count += 1
        limit = self.config.limit_packets
        if self.backlog > self.config.limit_bytes or 0 < limit < self.packets:
            return self._drop_from_fattest()
        return []

    def _drop_from_fattest(self) -> list[int]:
        fat = max(self.flows.values(), key=lambda f: f.backlog)
        threshold = fat.backlog >> 1
        dropped, length = [], 0
        while fat.packets and len(dropped) < DROP_BATCH and (not dropped or length < threshold):
            pid, size, _at, _ect = fat.packets.popleft()
            fat.backlog -= size
            self.backlog -= size
            self.packets -= 1
            dropped.append(pid)
            length += size
        self.counters["tail_drops"] += len(dropped)
        return dropped

    def next_dequeue(self) -> int | None:
        """When the link is next free with something to send (None: empty)."""
        return self.link_free if self.packets else None

    def advance(self, now: int) -> list[tuple[int, int, int]]:
        """Every dequeue due by ``now``: (id, SEND | MARK | DROP, when it has left the link;
        0 for a drop), in the order they leave."""
        out: list[tuple[int, int, int]] = []
        while self.packets and self.link_free <= now:
            for pid, verdict in self.dequeue(self.link_free):
                out.append((pid, verdict, 0 if verdict == DROP else self.link_free))
        return out

    def dequeue(self, now: int) -> list[tuple[int, int]]:
        """The link is free at ``now``: (id, verdict) of the packets CoDel dropped on the way
        and, last, of the packet that starts its transmission (fq_codel_dequeue)."""
        out: list[tuple[int, int]] = []
        while True:
            head = self.new_flows or self.old_flows
            if not head:
                return out
            flow = head[0]
            if flow.deficit <= 0:
                flow.deficit += self.quantum
                head.popleft()
                self.old_flows.append(flow)
                continue
            size = self._codel_dequeue(flow, now, out)
            if size is not None:
                flow.deficit -= size
                return out
            head.popleft()
            if head is self.new_flows and self.old_flows:
                self.old_flows.append(flow)
            else:
                flow.listed = False

    def _codel_dequeue(self, flow: Flow, now: int, out: list[tuple[int, int]]) -> int | None:
        """The flow's CoDel at ``now``: the size of the packet sent (or marked), or None when
        the flow has nothing left to send."""
        while flow.packets:
            pid, size, at, ect = flow.packets.popleft()
            flow.backlog -= size
            self.backlog -= size
            self.packets -= 1
            sojourn = now - at
            if flow.codel.signal(now, sojourn, self.backlog):
                if not (self.config.ecn and ect):
                    out.append((pid, DROP))
                    self.counters["aqm_drops"] += 1
                    continue
                out.append((pid, MARK))
                self.counters["marks"] += 1
            else:
                out.append((pid, SEND))
            self.link_free = now + int(size * self.ns_per_byte)
            self.counters["sent"] += 1
            self.counters["sent_bytes"] += size
            self.sojourn_ns_total += sojourn
            self.sojourn_ns_max = max(self.sojourn_ns_max, sojourn)
            return size
        flow.codel.dropping = False
        return None

    def held_ids(self) -> list[int]:
        return [p[0] for flow in self.flows.values() for p in flow.packets]

    def status(self, now: int | None = None) -> dict:
        """The counters; with ``now``, ``qlen`` and ``sojourn_ms_now``: the oldest waiting
        packet's sojourn so far (what its flow's CoDel will judge; with flow queues, how
        long a newcomer waits depends on its flow)."""
        out = {**queue_status(self.counters, self.backlog, self.sojourn_ns_total,
                              self.sojourn_ns_max),
               "backlog_packets": self.packets, "new_flows": len(self.new_flows),
               "old_flows": len(self.old_flows), "new_flow_count": self.new_flow_count}
        if now is not None:
            oldest = min((f.packets[0][2] for f in self.flows.values() if f.packets),
                         default=now)
            out.update(qlen=self.packets, sojourn_ms_now=round(max(0, now - oldest) / 1e6, 3))
        return out
