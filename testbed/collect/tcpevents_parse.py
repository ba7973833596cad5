"""Reading a tcp events spool (``collect/tcpevents``) after the run: rows, counts, CSV.

Total: a damaged or cut spool gives what could be read and says what was
lost (``Decoded``), never an exception. The spool carries the event formats
and page layout it was recorded with, so decoding needs nothing else.
Rows are streamed in time order (each CPU's pages are in order; the CPUs are
merged), so ``export`` writes ``tcp_events.csv`` and counts per flow without
holding a long run's millions of events in memory.
"""

from __future__ import annotations

import heapq
import mmap
import operator
import os
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from testbed.collect.tcpevents import SPOOL_HEADER_LENGTH, SPOOL_MAGIC, SPOOL_RECORD, \
    SpoolHeader, TraceStats
from testbed.collect.tcpinfo import CA_STATES, TCP_STATES
from testbed.kernel.ringbuffer import EventFormat, decode_page, record_struct
from testbed.results import TCP_EVENTS_COLUMNS

CSV_COLUMNS = TCP_EVENTS_COLUMNS
INFINITE_SSTHRESH = 0x7FFFFFFF
_FIELDS = ("common_type", "saddr", "daddr", "saddr_v6", "daddr_v6", "sport", "dport", "family",
           "data_len", "snd_nxt", "snd_una", "snd_cwnd", "ssthresh", "snd_wnd", "srtt", "rcv_wnd",
           "sock_cookie", "cong_state", "state", "err", "reason", "rtt_us", "space", "rcvbuf",
           "rcv_ssthresh", "window_clamp")
# a record field -> (CSV column, how its value is shown: None as it is)
_COLUMNS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "snd_cwnd": ("cwnd", None), "srtt": ("srtt_us", None), "snd_wnd": ("snd_wnd", None),
    "rcv_wnd": ("rcv_wnd", None), "snd_nxt": ("snd_nxt", None), "snd_una": ("snd_una", None),
    "data_len": ("data_len", None), "sock_cookie": ("cookie", None), "err": ("err", None),
    "rcvbuf": ("rcvbuf", None), "rcv_ssthresh": ("rcv_ssthresh", None),
    "window_clamp": ("window_clamp", None), "space": ("rcv_space", None),
    "rtt_us": ("rtt_us", None), "reason": ("reason", None),
    "ssthresh": ("ssthresh", lambda v: None if v >= INFINITE_SSTHRESH else v),
    "cong_state": ("ca_state", lambda v: CA_STATES.get(v, str(v))),
    "state": ("tcp_state", lambda v: TCP_STATES.get(v, str(v))),
}


@dataclass
class Decoded:
    """What decoding a spool gave (``rows`` only from ``decode_spool``), and what it could
    not read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    pages: int = 0
    lost: int = 0               # events the pages say were lost before them
    lost_unknown: int = 0       # pages saying "some were lost" without a count
    unreadable_bytes: int = 0
    unknown_records: int = 0    # records of an event id the header does not describe
    foreign: int = 0            # events of other ports (only those the kernel cannot filter)
    other_sockets: int = 0      # events on a flow's port from sockets not the flow's (below)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "foreign": self.foreign,
                "other_sockets": self.other_sockets, "pages": self.pages,
                "lost": self.lost,
                "lost_unknown_pages": self.lost_unknown, "unreadable_bytes": self.unreadable_bytes,
                "unknown_records": self.unknown_records, "problems": self.problems}


def read_spool(data: bytes | mmap.mmap) -> tuple[SpoolHeader, Iterator[tuple[int, bytes]]]:
    """The spool's header and its (cpu, page) records. ValueError if it is not a spool."""
    head = len(SPOOL_MAGIC) + SPOOL_HEADER_LENGTH.size
    if len(data) < head or data[:len(SPOOL_MAGIC)] != SPOOL_MAGIC:
        raise ValueError("not a tcp events spool (no TBTRACE1 header)")
    (n,) = SPOOL_HEADER_LENGTH.unpack_from(data, len(SPOOL_MAGIC))
    header = SpoolHeader.from_json(data[head:head + n])

    def records() -> Iterator[tuple[int, bytes]]:
        off = head + n
        while off + SPOOL_RECORD.size <= len(data):
            cpu, length = SPOOL_RECORD.unpack_from(data, off)
            off += SPOOL_RECORD.size
            yield cpu, data[off:off + length]
            off += length
    return header, records()


def iter_rows(data: bytes | mmap.mmap, t0: float, out: Decoded) -> Iterator[dict[str, Any]]:
    """Every recorded event as a row (``CSV_COLUMNS``; ``t`` in seconds after ``t0``, a
    ``time.monotonic()`` value), in time order: each CPU's pages are, and the CPUs are
    merged. Counts into ``out``; never raises on a damaged spool."""
    try:
        header, records = read_spool(data)
    except ValueError as exc:
        out.problems.append(str(exc))
        return
    by_cpu: dict[int, list[bytes]] = {}
    for cpu, raw in records:
        by_cpu.setdefault(cpu, []).append(raw)
    streams = [_cpu_rows(header, cpu, pages, int(round(t0 * 1e9)), out)
               for cpu, pages in sorted(by_cpu.items())]
    for row in heapq.merge(*streams, key=operator.itemgetter("t")):
        out.events += 1
        yield row


def decode_spool(data: bytes, t0: float = 0.0) -> Decoded:
    """``iter_rows`` into ``Decoded.rows``."""
    out = Decoded()
    out.rows = list(iter_rows(data, t0, out))
    return out


Socket = tuple[Any, Any, Any, Any]      # (src, sport, dst, dport)


def export(spool: Path, csv_path: Path, t0: float, flow_of_port: dict[int, str] | None = None,
           sockets: dict[str, set[Socket]] | None = None
           ) -> tuple[Decoded, list[dict[str, Any]]]:
    """Write ``tcp_events.csv`` from a spool file, streaming (a long run's events need not
    fit in memory as rows), and return what was decoded and the per-flow counts. With
    ``flow_of_port`` (a flow's server port -> its name) rows and counts get a ``flow``.

    The tracepoints see every namespace of the host, and another testbed's flow may use
    the same addresses and port: where ``sockets`` (a flow's name -> the sockets the
    tcp_info sampler saw in this run's namespaces) knows a flow's sockets, an event on its
    port from another socket is not the flow's (``Decoded.other_sockets`` counts them)."""
    out = Decoded()
    counter = FlowCounter()
    columns = CSV_COLUMNS if flow_of_port is None else ("flow",) + CSV_COLUMNS
    with open(spool, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            out.problems.append(f"{spool} is empty")
            write_events_csv([], csv_path, columns)
            return out, []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            rows = iter_rows(data, t0, out)
            if flow_of_port is not None:
                rows = (_label(row, flow_of_port, sockets or {}, out) for row in rows)
            write_events_csv((counter.add(row) for row in rows), csv_path, columns)
    return out, counter.flows()


def _label(row: dict[str, Any], flow_of_port: dict[int, str],
           sockets: dict[str, set[Socket]], out: Decoded) -> dict[str, Any]:
    flow = flow_of_port.get(row["dport"]) or flow_of_port.get(row["sport"])
    known = sockets.get(flow) if flow is not None else None
    if known and not _one_of(row, known):
        out.other_sockets += 1
        flow = None
    row["flow"] = flow
    return row


def _one_of(row: dict[str, Any], sockets: set[Socket]) -> bool:
    """Whether ``row`` is an event of one of ``sockets`` (either end of a connection), or
    of the listening socket at one of their ends (no peer: the server's own resets and
    its destruction)."""
    key = (row.get("src"), row.get("sport"), row.get("dst"), row.get("dport"))
    if key in sockets or (key[2], key[3], key[0], key[1]) in sockets:
        return True
    if not row.get("dport"):
        ends = {s[:2] for s in sockets} | {s[2:] for s in sockets}
        return key[:2] in ends
    return False


def _cpu_rows(header: SpoolHeader, cpu: int, pages: list[bytes], t0_ns: int,
              out: Decoded) -> Iterator[dict[str, Any]]:
    layout, readers, ports = header.layout, _readers(header.formats), header.ports
    unfiltered = {name.removeprefix("tcp_") for name in header.unfiltered}
    for raw in pages:
        page = decode_page(raw, layout)
        out.pages += 1
        out.lost += max(page.lost, 0)
        out.lost_unknown += page.lost < 0
        out.unreadable_bytes += page.unreadable
        for ts, record in page.events:
            row = _decode_record(readers, record, out)
            if row is None:
                continue
            if row["event"] in unfiltered and not {row["sport"], row["dport"]} & ports:
                out.foreign += 1
                continue
            row["t"] = (ts - t0_ns) / 1e9
            row["cpu"] = cpu
            yield row


@dataclass(frozen=True)
class _Reader:
    """How to turn one event's records into rows: one unpack, then a plan of columns."""

    event: str
    layout: struct.Struct
    names: tuple[str, ...]
    columns: tuple[tuple[int, str, Callable[[Any], Any] | None], ...]  # index, column, show
    addresses: dict[bytes, str | None] = field(default_factory=dict)      # raw -> text, memo


def _readers(formats: tuple[EventFormat, ...]) -> dict[int, _Reader]:
    out = {}
    for fmt in formats:
        names, layout = record_struct(fmt, _FIELDS)
        columns = tuple((i, *_COLUMNS[n]) for i, n in enumerate(names) if n in _COLUMNS)
        out[fmt.id] = _Reader(fmt.name.removeprefix("tcp_"), layout, names, columns)
    return out


def _decode_record(readers: dict[int, _Reader], record: bytes, out: Decoded) -> dict | None:
    if len(record) < 2:
        out.unreadable_bytes += len(record)
        return None
    reader = readers.get(int.from_bytes(record[:2], "little"))
    if reader is None:
        out.unknown_records += 1
        return None
    if len(record) < reader.layout.size:
        out.unreadable_bytes += len(record)
        return None
    values = reader.layout.unpack_from(record)
    row: dict[str, Any] = {"event": reader.event}
    _addresses(dict(zip(reader.names, values)), row, reader.addresses)
    for i, column, show in reader.columns:
        row[column] = show(values[i]) if show is not None else values[i]
    return row


def _addresses(values: dict[str, Any], row: dict[str, Any],
               memo: dict[bytes, Any] | None = None) -> None:
    """src/dst and ports, from split address fields (family, saddr[4], saddr_v6[16]) or
    from whole sockaddrs (tcp_probe, tcp_send_reset: saddr[28]). ``memo`` keeps what raw
    addresses were already turned into (a run has few)."""
    memo = {} if memo is None else memo
    saddr, daddr = values.get("saddr", b""), values.get("daddr", b"")
    if len(saddr) < 24:
        v6 = values.get("family") == socket.AF_INET6
        saddr = values.get("saddr_v6", b"") if v6 else saddr
        daddr = values.get("daddr_v6", b"") if v6 else daddr
    for raw, addr_key, port_key in ((saddr, "src", "sport"), (daddr, "dst", "dport")):
        found = memo.get(raw)
        if found is None:
            found = memo[raw] = _sockaddr(raw) if len(raw) >= 24 else (_ntop(raw), None)
        row[addr_key] = found[0]
        row[port_key] = values.get(port_key, found[1])


def _sockaddr(raw: bytes) -> tuple[str | None, int | None]:
    family = int.from_bytes(raw[:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return _ntop(raw[4:8]), port
    if family == socket.AF_INET6:
        return _ntop(raw[8:24]), port
    return None, None


def _ntop(raw: bytes) -> str | None:
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return None


class FlowCounter:
    """Per socket (src, sport, dst, dport), row by row: events by kind, retransmissions
    (successful ``tcp_retransmit_skb``), fast recoveries (entries into ``recovery``), loss
    episodes (entries into ``loss``) and RTOs (every move to ``loss``, repeated timeouts
    within an episode included), the largest cwnd, resets, the first and last event's time."""

    def __init__(self) -> None:
        self._flows: dict[tuple, dict[str, Any]] = {}
        self._ca: dict[tuple, str | None] = {}

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Count ``row``; returns it (so that it can sit in a stream)."""
        key = (row.get("src"), row.get("sport"), row.get("dst"), row.get("dport"))
        flow = self._flows.get(key)
        if flow is None:
            flow = self._flows[key] = {**({"flow": row["flow"]} if "flow" in row else {}),
                                       "src": key[0], "sport": key[1], "dst": key[2],
                                       "dport": key[3], "events": {}, "retransmissions": 0,
                                       "fast_recoveries": 0, "loss_episodes": 0, "rtos": 0,
                                       "max_cwnd": None, "resets_sent": 0, "resets_received": 0,
                                       "first_t": row["t"]}
        self._count(key, flow, row)
        return row

    def _count(self, key: tuple, flow: dict[str, Any], row: dict[str, Any]) -> None:
        event = row["event"]
        flow["events"][event] = flow["events"].get(event, 0) + 1
        flow["last_t"] = row["t"]
        if event == "retransmit_skb" and not row.get("err"):
            flow["retransmissions"] += 1
        elif event == "cong_state_set":
            state = row.get("ca_state")
            flow["rtos"] += state == "loss"
            if state != self._ca.get(key, "open"):
                flow["fast_recoveries"] += state == "recovery"
                flow["loss_episodes"] += state == "loss"
            self._ca[key] = state
        elif event == "send_reset":
            flow["resets_sent"] += 1
        elif event == "receive_reset":
            flow["resets_received"] += 1
        cwnd = row.get("cwnd")
        if cwnd is not None and (flow["max_cwnd"] is None or cwnd > flow["max_cwnd"]):
            flow["max_cwnd"] = cwnd

    def flows(self) -> list[dict[str, Any]]:
        return list(self._flows.values())


def flow_counts(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``FlowCounter`` over ``rows``."""
    counter = FlowCounter()
    for row in rows:
        counter.add(row)
    return counter.flows()


def result_fields(stats: TraceStats, decoded: Decoded, flows: list[dict[str, Any]],
                  missing: list[str]) -> dict[str, Any]:
    """What result.json keeps of a run's tcp events: the trace's own loss counters, what
    decoding could not read, tracepoints this kernel lacks, and the per-flow counts."""
    return {"trace": stats.as_dict(), "decode": decoded.as_dict(),
            "missing_events": list(missing), "flows": flows}


def write_events_csv(rows: Iterable[dict[str, Any]], path: Path,
                     columns: tuple[str, ...] = CSV_COLUMNS) -> None:
    """``tcp_events.csv``: one row per event, ``columns`` in order (empty cells for what an
    event does not carry), written as the rows come."""
    with open(path, "w", buffering=1 << 20) as out:
        out.write(",".join(columns) + "\n")
        for row in rows:
            out.write(",".join("" if row.get(c) is None else str(row.get(c))
                               for c in columns) + "\n")
