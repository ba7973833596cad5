"""Time-sequence graphs (tcptrace style) of one connection from a run's pcap.

For the data direction of a connection (sender -> receiver): each segment
as a vertical bar from its first to its last byte (retransmissions apart),
the cumulative ACK line, the receive window's right edge (ACK + advertised
window, scaled as negotiated in the SYNs), and SACK blocks. Sequence numbers
are bytes from the sender's initial sequence number, unwrapped past 4 GiB.

Which connection is a flow's: the socket of its that carried the most bytes
in ``tcp_info.csv`` (src, sport, dst, dport), found in the captures under
``raw/``. Times are seconds on the run's clock (``clock.tcp_info_zero_epoch``
in the manifest, see ``analysis.clock``), else since the connection's first
packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from testbed.analysis.clock import RUN_CLOCK, t0_epoch
from testbed.analysis.runs import Run
from testbed.errors import ResultsError
from testbed.pcapfile import ACK, SYN, TcpPacket, read_tcp

SEQ_MOD = 1 << 32


@dataclass
class TimeSequence:
    """What a time-sequence graph draws, times in seconds, sequence in bytes from the ISN."""

    connection: str
    clock: str                                         # what time 0 is
    segments: list[tuple[float, int, int]] = field(default_factory=list)    # (t, start, end)
    retransmits: list[tuple[float, int, int]] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)
    window: list[tuple[float, int]] = field(default_factory=list)           # (t, right edge)
    sacks: list[tuple[float, int, int]] = field(default_factory=list)
    syns: list[float] = field(default_factory=list)


def _unwrap(value: int, isn: int, near: int) -> int:
    rel = (value - isn) % SEQ_MOD
    return near + (rel - near + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2


class _Builder:
    """Packets of one connection in capture order -> a TimeSequence."""

    def __init__(self, key: tuple[str, int, str, int], zero: float, clock: str) -> None:
        self.key = key
        self.zero = zero
        self.ts = TimeSequence(f"{key[0]}:{key[1]} > {key[2]}:{key[3]}", clock)
        self.isn: int | None = None
        self.high = 0
        self.shift = {"data": 0, "ack": 0}     # window scale each side's SYN offered
        self.offered = {"data": False, "ack": False}

    def add(self, p: TcpPacket) -> None:
        t = p.t - self.zero
        forward = p.key == self.key
        if p.flags & SYN:
            self.ts.syns.append(t)
            side = "data" if forward else "ack"
            self.shift[side], self.offered[side] = p.wscale or 0, p.wscale is not None
            if forward:
                self.isn = (p.seq + 1) % SEQ_MOD
            return
        if self.isn is None:
            self.isn = p.seq if forward else p.ack     # capture began after the handshake
        if forward:
            self._data(t, p)
        elif p.flags & ACK:
            self._ack(t, p)

    def _data(self, t: float, p: TcpPacket) -> None:
        if p.payload <= 0:
            return
        assert self.isn is not None
        start = _unwrap(p.seq, self.isn, self.high)
        end = start + p.payload
        (self.ts.retransmits if end <= self.high else self.ts.segments).append((t, start, end))
        self.high = max(self.high, end)

    def _ack(self, t: float, p: TcpPacket) -> None:
        assert self.isn is not None
        acked = _unwrap(p.ack, self.isn, self.high)
        self.ts.acks.append((t, acked))
        shift = self.shift["ack"] if all(self.offered.values()) else 0   # both or neither
        self.ts.window.append((t, acked + (p.window << shift)))
        for left, right in p.sack:
            self.ts.sacks.append((t, _unwrap(left, self.isn, self.high),
                                  _unwrap(right, self.isn, self.high)))


def time_sequence(packets: list[TcpPacket], key: tuple[str, int, str, int],
                  zero: float | None = None, clock: str = "") -> TimeSequence:
    """The graph of the data direction ``key`` (src, sport, dst, dport) and its ACKs."""
    reverse = (key[2], key[3], key[0], key[1])
    mine = [p for p in packets if p.key in (key, reverse)]
    if zero is None:
        zero = mine[0].t if mine else 0.0
        clock = "s since the connection's first packet"
    builder = _Builder(key, zero, clock)
    for p in mine:
        builder.add(p)
    return builder.ts


def flow_connection(run: Run, flow: str) -> tuple[str, int, str, int]:
    """The flow's socket that carried the most bytes, from tcp_info.csv."""
    names = [f.get("name") for f in run.flows]
    if flow not in names:
        raise ResultsError(f"{run.path}: no flow {flow!r} (flows: {', '.join(map(str, names))})")
    best: dict[tuple[str, int, str, int], float] = {}
    for r in run.tcp_info():
        if r.get("flow") == flow and r.get("sport") is not None and r.get("dport") is not None:
            key = (str(r.get("src")), int(r["sport"]), str(r.get("dst")), int(r["dport"]))
            best[key] = max(best.get(key, 0.0), r.get("bytes_acked") or 0.0)
    if not best:
        raise ResultsError(f"{run.path}: flow {flow!r} has no tcp_info samples to find its "
                           "connection by (a udp flow has no time-sequence graph)")
    return max(best, key=lambda k: best[k])


def run_time_sequence(run: Run, flow: str) -> TimeSequence:
    """The time-sequence graph of ``flow`` from the first capture under raw/ that holds it,
    on the run's clock when the manifest records t0."""
    key = flow_connection(run, flow)
    zero = t0_epoch(run)
    clock = RUN_CLOCK if zero is not None else ""
    pcaps = sorted(Path(run.path, "raw").glob("*.pcap"))
    if not pcaps:
        raise ResultsError(f"{run.path}: no packet capture (raw/*.pcap); run the workload "
                           "with 'capture: {enabled: true}'")
    for pcap in pcaps:
        read = read_tcp(pcap.read_bytes())
        ts = time_sequence(read.packets, key, zero, clock)
        if ts.segments or ts.acks:
            return ts
    raise ResultsError(f"{run.path}: connection {key[0]}:{key[1]} > {key[2]}:{key[3]} of flow "
                       f"{flow!r} is in none of {', '.join(p.name for p in pcaps)}")
