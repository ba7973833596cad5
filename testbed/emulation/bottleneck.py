"""A bottleneck queue for the link engine: rate, buffer and AQM on sojourn times. Pure.

The userspace backend's bottleneck is otherwise tbf's fifo in the kernel; with
an ``aqm`` other than fifo the engine becomes the bottleneck instead, as
Mahimahi's codel/pie queues do: a FIFO served at ``rate``, tail drop at
``limit_bytes``, and at each packet's dequeue (the start of its transmission)
the discipline decides from its sojourn time whether it is sent, dropped or,
with ECN on an ECN-capable packet, marked CE.

Because the queue is a FIFO served at a known rate, a packet's dequeue time is
known when it arrives (``max(arrival, link free)``), so the discipline's
dequeue logic runs at arrival with that future time as "now": the state
evolves in dequeue order, which for a FIFO is arrival order. A dropped packet
takes no transmission time. The backlog a discipline sees is the bytes queued
ahead of the packet.

CoDel follows RFC 8289 (the kernel's codel.h): a packet whose sojourn has
stayed above ``target`` for ``interval`` starts a dropping state in which the
next drop comes ``interval / sqrt(count)`` later. RED (Floyd & Jacobson 1993,
the kernel's red.h without the idle correction): an EWMA of the backlog
(w = 1/512) against min/max thresholds of 1/12 and 1/4 of the limit, drop
probability rising linearly to 2 % at max (tc red's defaults when only a limit
is given, in bytes); above max, always. PIE (``pie.py``) decides at enqueue
instead, from the queue delay at the packet's arrival, and marks only while its
probability is at most 10 %. ``limit_packets`` (when set: the aqm's ``limit``)
tail-drops on the packets waiting too. Times are integer nanoseconds.

FQ-CoDel cannot be decided at arrival (a packet's turn depends on later
arrivals of other flows): it is ``fqcodel.py``, which really holds packets.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from testbed.emulation.pie import Pie

SEND = 0
DROP = 1
MARK = 2


@dataclass(frozen=True)
class BottleneckConfig:
    rate_bps: float
    limit_bytes: int
    aqm: str = "fifo"            # fifo, codel, red, pie (fq_codel: fqcodel.py)
    target_ns: int = 5_000_000
    interval_ns: int = 100_000_000   # pie: tupdate
    ecn: bool = False
    limit_packets: int = 0       # 0: only the byte limit


class CoDel:
    """RFC 8289's dequeue decision, driven by (now, sojourn, backlog)."""

    def __init__(self, target_ns: int, interval_ns: int, mtu: int = 1514) -> None:
        self.target, self.interval, self.mtu = target_ns, interval_ns, mtu
        self.first_above = 0
        self.dropping = False
        self.drop_next = 0
        self.count = 0
        self.last_count = 0

    def _control_law(self, t: int) -> int:
        return t + int(self.interval / math.sqrt(max(1, self.count)))

    def _ok_to_drop(self, now: int, sojourn: int, backlog: int) -> bool:
        if sojourn < self.target or backlog <= self.mtu:
            self.first_above = 0
            return False
        if self.first_above == 0:
            self.first_above = now + self.interval
            return False
        return now >= self.first_above

    def signal(self, now: int, sojourn: int, backlog: int) -> bool:
        """Whether this packet gets the congestion signal (a drop, or a CE mark)."""
        ok = self._ok_to_drop(now, sojourn, backlog)
        if self.dropping:
            if not ok:
                self.dropping = False
                return False
            if now >= self.drop_next:
                self.count += 1
                self.drop_next = self._control_law(self.drop_next)
                return True
            return False
        if ok:
            self.dropping = True
            delta = self.count - self.last_count
            self.count = delta if delta > 1 and now - self.drop_next < 16 * self.interval else 1
            self.last_count = self.count
            self.drop_next = self._control_law(now)
            return True
        return False


class Red:
    """RED on the average backlog (bytes), tc red's defaults for a byte limit."""

    W = 1 / 512
    MAX_P = 0.02

    def __init__(self, limit_bytes: int, rng: random.Random) -> None:
        self.min_th, self.max_th = limit_bytes / 12, limit_bytes / 4
        self.avg = 0.0
        self.rng = rng

    def signal(self, backlog: int) -> bool:
        self.avg += self.W * (backlog - self.avg)
        if self.avg < self.min_th:
            return False
        if self.avg >= self.max_th:
            return True
        p = self.MAX_P * (self.avg - self.min_th) / (self.max_th - self.min_th)
        return self.rng.random() < p


class Bottleneck:
    """The queue of one direction: ``arrive`` says SEND (with when it leaves), DROP or MARK."""

    def __init__(self, config: BottleneckConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.ns_per_byte = 8e9 / config.rate_bps
        self.link_free = 0
        self.queued: deque[tuple[int, int]] = deque()   # (dequeue time, bytes) ahead
        self.backlog = 0
        self.codel = CoDel(config.target_ns, config.interval_ns) if config.aqm == "codel" \
            else None
        self.red = Red(config.limit_bytes, rng or random.Random()) if config.aqm == "red" \
            else None
        self.pie = Pie(config.target_ns, config.interval_ns, rng or random.Random()) \
            if config.aqm == "pie" else None
        self.counters = dict.fromkeys(("sent", "sent_bytes", "tail_drops", "aqm_drops", "marks"), 0)
        self.sojourn_ns_total = 0
        self.sojourn_ns_max = 0

    def arrive(self, now: int, size: int, ect: bool) -> tuple[int, int]:
        """(SEND, time it has left the link) | (DROP, 0) | (MARK, time it has left)."""
        queued = self.queued
        while queued and queued[0][0] <= now:
            self.backlog -= queued.popleft()[1]
        if self.pie is not None:
            self.pie.catch_up(now, self.link_free)
        if self._full(size):
            self.counters["tail_drops"] += 1
            return self._drop()
        start = max(now, self.link_free)
        sojourn = start - now
        if self._signal(start, sojourn):
            if not (self.config.ecn and ect and (self.pie is None or self.pie.may_mark())):
                self.counters["aqm_drops"] += 1
                return self._drop()
            verdict = MARK
            self.counters["marks"] += 1
        else:
            verdict = SEND
        self.link_free = start + int(size * self.ns_per_byte)
        queued.append((start, size))
        self.backlog += size
        self.counters["sent"] += 1
        self.counters["sent_bytes"] += size
        self.sojourn_ns_total += sojourn
        self.sojourn_ns_max = max(self.sojourn_ns_max, sojourn)
        return verdict, self.link_free

    def _full(self, size: int) -> bool:
        limit = self.config.limit_packets
        return self.backlog + size > self.config.limit_bytes or 0 < limit <= len(self.queued)

    def _drop(self) -> tuple[int, int]:
        if self.pie is not None:
            self.pie.dropped()
        return DROP, 0

    def _signal(self, start: int, sojourn: int) -> bool:
        """CoDel and RED judge the packet at its dequeue (``start``); PIE at its arrival,
        on the delay it will wait (``sojourn``)."""
        if self.codel is not None:
            return self.codel.signal(start, sojourn, self.backlog)
        if self.red is not None:
            return self.red.signal(self.backlog)
        if self.pie is not None:
            return self.pie.drop_early(sojourn, self.backlog)
        return False

    def status(self, now: int | None = None) -> dict:
        """The counters; with ``now``, the queue as of then (``backlog`` is as of the last
        arrival: an idle link would go on showing the queue its last packet found).
        ``sojourn_ms_now``: how long a packet arriving now would wait (exact for this
        FIFO served at a fixed rate: until the link is free)."""
        out = queue_status(self.counters, self.backlog, self.sojourn_ns_total,
                           self.sojourn_ns_max)
        if self.pie is not None:
            out["pie_prob"] = round(self.pie.prob, 6)
        if now is not None:
            waiting = [size for start, size in self.queued if start > now]
            out.update(backlog_bytes=sum(waiting), qlen=len(waiting),
                       sojourn_ms_now=round(max(0, self.link_free - now) / 1e6, 3))
        return out


def queue_status(counters: dict[str, int], backlog: int, sojourn_ns_total: int,
                 sojourn_ns_max: int) -> dict:
    """The status keys every discipline reports (run results sample them)."""
    sent = counters["sent"]
    return {**counters, "backlog_bytes": backlog,
            "sojourn_ms_mean": round(sojourn_ns_total / sent / 1e6, 3) if sent else None,
            "sojourn_ms_max": round(sojourn_ns_max / 1e6, 3)}


def mark_ce(packet: bytearray) -> bool:
    """Set CE on an ECN-capable IPv4/IPv6 packet in place (IPv4 header checksum fixed
    incrementally, RFC 1624; the TCP/UDP checksum made whole: ``fill_transport_checksum``).
    False (untouched) if it is not ECN-capable."""
    if not _set_ce(packet):
        return False
    fill_transport_checksum(packet)
    return True


def _set_ce(packet: bytearray) -> bool:
    version = packet[0] >> 4
    if version == 4:
        tos = packet[1]
        if tos & 3 == 0:
            return False
        old = (packet[0] << 8) | tos
        packet[1] = tos | 3
        new = (packet[0] << 8) | packet[1]
        check = (~((packet[10] << 8) | packet[11])) & 0xFFFF
        check += (~old & 0xFFFF) + new
        check = (check & 0xFFFF) + (check >> 16)
        check = (check & 0xFFFF) + (check >> 16)
        check = ~check & 0xFFFF
        packet[10], packet[11] = check >> 8, check & 0xFF
        return True
    if version == 6:
        ecn = (packet[1] >> 4) & 3
        if ecn == 0:
            return False
        packet[1] |= 0x30
        return True
    return False


def _ones_complement_sum(data: bytes | bytearray) -> int:
    """The 16-bit one's complement sum of ``data`` (RFC 1071): the big-endian number it
    spells, modulo 0xFFFF (0xFFFF for a non-zero multiple)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    value = int.from_bytes(data, "big")
    folded = value % 0xFFFF
    return 0xFFFF if folded == 0 and value else folded


def fill_transport_checksum(packet: bytearray) -> bool:
    """Compute the TCP or UDP checksum of a whole IPv4/IPv6 packet afresh, in place.

    A packet handed back to the kernel with a new payload leaves NFQUEUE marked
    CHECKSUM_NONE, so a sender's checksum offload (the field then holds only the
    pseudo-header's sum) would reach the receiver as a bad checksum: the marked packet
    dropped there, a loss instead of a CE mark. False for what it does not know
    (another protocol, an IPv6 extension header, a UDP packet sent without one)."""
    version = packet[0] >> 4
    if version == 4:
        start, proto = (packet[0] & 0x0F) * 4, packet[9]
        end = int.from_bytes(packet[2:4], "big")
        pseudo = bytes(packet[12:20]) + bytes((0, proto)) + (end - start).to_bytes(2, "big")
    elif version == 6:
        start, proto = 40, packet[6]
        end = 40 + int.from_bytes(packet[4:6], "big")
        pseudo = bytes(packet[8:40]) + (end - start).to_bytes(4, "big") + bytes((0, 0, 0, proto))
    else:
        return False
    offset = {6: 16, 17: 6}.get(proto)
    if offset is None or end > len(packet) or end - start < offset + 2:
        return False
    at = start + offset
    if proto == 17 and version == 4 and packet[at:at + 2] == b"\0\0":
        return False                      # IPv4 UDP without a checksum stays without
    packet[at:at + 2] = b"\0\0"
    check = ~_ones_complement_sum(pseudo + bytes(packet[start:end])) & 0xFFFF
    if proto == 17 and check == 0:
        check = 0xFFFF                    # UDP's zero means "none"
    packet[at:at + 2] = check.to_bytes(2, "big")
    return True


def is_ect(packet: bytes | bytearray | memoryview) -> bool:
    """Whether an IP packet carries ECT(0), ECT(1) or CE."""
    if len(packet) < 2:
        return False
    version = packet[0] >> 4
    if version == 4:
        return packet[1] & 3 != 0
    if version == 6:
        return (packet[1] >> 4) & 3 != 0
    return False
