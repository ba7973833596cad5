"""Kernel TCP state over time, read with netlink sock_diag (no ``ss`` scraping).

``open_diag_socket`` opens a NETLINK_SOCK_DIAG socket in the current
namespace (call it inside ``Node.enter()``: the socket stays bound to the
namespace it was made in). ``TcpInfoSampler`` dumps TCP sockets of every
given namespace at a fixed period on a thread of its own. The kernel does
the filtering (an inet_diag bytecode program on the destination ports of
the flows), so what comes back is only the flows' sockets and the hot loop
writes each netlink read to a spool file as it is, with a time stamp: no
per-socket Python work while sampling. ``decode_spool`` turns the file into
rows afterwards, and says what it could not read of a spool cut short or
damaged (``testbed.collect.damage``) instead of raising. Decoding is pure and tested against pyroute2's own
``tcp_info`` layout on captured dumps.

Why raw messages and not ``pyroute2.DiagSocket.get_sock_stats``: the same
dump decoded by pyroute2's marshal costs ~20x more CPU per socket (see
benchmarks/bench_sampler.py), which is the difference between 100 flows at
10 ms fitting in 10 % of a core or not. The request and the structures are
the same (``inet_diag_req_v2``, ``inet_diag_msg``, ``tcp_info``).
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from testbed.collect.damage import Damage
from testbed.results import TCPINFO_COLUMNS

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
INET_DIAG_INFO = 2
INET_DIAG_VEGASINFO = 3
INET_DIAG_CONG = 4
INET_DIAG_BBRINFO = 16
INET_DIAG_REQ_BYTECODE = 1
# inet_diag bytecode operations (include/uapi/linux/inet_diag.h)
BC_JMP, BC_D_GE, BC_D_LE, BC_D_EQ = 1, 4, 5, 12
# idiag_ext is a u8: BBR info is returned for the VEGASINFO bit (as ss does)
EXT_MASK = (1 << (INET_DIAG_INFO - 1)) | (1 << (INET_DIAG_VEGASINFO - 1)) | (1 << (INET_DIAG_CONG - 1))
TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING"}
CA_STATES = {0: "open", 1: "disorder", 2: "cwr", 3: "recovery", 4: "loss"}
# every state that carries data: not LISTEN, TIME_WAIT, CLOSE, SYN_RECV
DATA_STATES = sum(1 << s for s in (1, 2, 4, 5, 8, 9, 11))
LISTEN_STATES = 1 << 10

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI HH 16s16s I 8s".replace(" ", ""))  # inet_diag_req_v2; ports are big-endian
_MSG_HEAD = struct.Struct("=BBBB")
_PORTS = struct.Struct(">HH")
_RTA = struct.Struct("=HH")
_SPOOL = struct.Struct("=dHI")  # time, namespace index, length of what follows
# spool v2: this magic, then records of (time, namespace index, length) + one netlink
# read as received (whole messages, NLMSG_DONE included). Without it: v1, records of
# one inet_diag message each (no netlink header).
SPOOL_MAGIC = b"TBSPOOL2"
_OP = struct.Struct("=BBH")
INET_DIAG_MSG_SIZE = 72    # struct inet_diag_msg; its attributes follow

# struct tcp_info (include/uapi/linux/tcp.h), in order, as far as we read it
TCP_INFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("state", "B"), ("ca_state", "B"), ("retransmits", "B"), ("probes", "B"), ("backoff", "B"),
    ("options", "B"), ("wscale", "B"), ("app_limited", "B"),
    ("rto", "I"), ("ato", "I"), ("snd_mss", "I"), ("rcv_mss", "I"), ("unacked", "I"),
    ("sacked", "I"), ("lost", "I"), ("retrans", "I"), ("fackets", "I"),
    ("last_data_sent", "I"), ("last_ack_sent", "I"), ("last_data_recv", "I"), ("last_ack_recv", "I"),
    ("pmtu", "I"), ("rcv_ssthresh", "I"), ("rtt", "I"), ("rttvar", "I"), ("snd_ssthresh", "I"),
    ("snd_cwnd", "I"), ("advmss", "I"), ("reordering", "I"), ("rcv_rtt", "I"), ("rcv_space", "I"),
    ("total_retrans", "I"), ("pacing_rate", "Q"), ("max_pacing_rate", "Q"), ("bytes_acked", "Q"),
    ("bytes_received", "Q"), ("segs_out", "I"), ("segs_in", "I"), ("notsent_bytes", "I"),
    ("min_rtt", "I"), ("data_segs_in", "I"), ("data_segs_out", "I"), ("delivery_rate", "Q"),
    ("busy_time", "Q"), ("rwnd_limited", "Q"), ("sndbuf_limited", "Q"), ("delivered", "I"),
    ("delivered_ce", "I"), ("bytes_sent", "Q"), ("bytes_retrans", "Q"), ("dsack_dups", "I"),
    ("reord_seen", "I"), ("rcv_ooopack", "I"), ("snd_wnd", "I"), ("rcv_wnd", "I"),
    ("rehash", "I"),
)
_TCP_INFO = struct.Struct("=" + "".join(f for _, f in TCP_INFO_FIELDS))
_TCP_INFO_NAMES = tuple(n for n, _ in TCP_INFO_FIELDS)
# where each field ends: a kernel older than the field sends a shorter struct
_TCP_INFO_END = {name: struct.calcsize("=" + "".join(f for _, f in TCP_INFO_FIELDS[:i + 1]))
                 for i, (name, _) in enumerate(TCP_INFO_FIELDS)}
# tcp_info fields that go to the CSV as they are: column -> field
_FLOW_CONTROL = {"snd_wnd": "snd_wnd", "rcv_wnd": "rcv_wnd", "rwnd_limited_us": "rwnd_limited",
                 "sndbuf_limited_us": "sndbuf_limited", "busy_time_us": "busy_time",
                 "delivered_ce": "delivered_ce", "reordering": "reordering"}
_BBR_INFO = struct.Struct("=IIIII")

CSV_COLUMNS = TCPINFO_COLUMNS


def open_diag_socket() -> socket.socket:
    """A sock_diag netlink socket in the calling thread's current network namespace."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((0, 0))
    return s


def port_filter(ports: frozenset[int] | set[int] | list[int]) -> bytes:
    """inet_diag bytecode accepting sockets whose destination port is in ``ports``.

    Ports are grouped into ranges; each range is a block (``dport == p``, or
    ``dport >= lo`` and ``dport <= hi``) and the blocks are OR-ed: a failed
    test jumps to the next block (past the end, i.e. reject, from the last),
    a passed block jumps to the end (accept). Every jump lands on an op of the
    fall-through chain, which is what the kernel's audit requires.
    """
    if not ports:
        raise ValueError("port_filter needs at least one port")
    ranges: list[list[int]] = []
    for p in sorted(set(ports)):
        if not 0 < p < 65536:
            raise ValueError(f"port {p} out of range")
        if ranges and p == ranges[-1][1] + 1:
            ranges[-1][1] = p
        else:
            ranges.append([p, p])
    blocks = [[(BC_D_EQ, lo)] if lo == hi else [(BC_D_GE, lo), (BC_D_LE, hi)] for lo, hi in ranges]
    sizes = [8 * len(b) + (4 if i < len(blocks) - 1 else 0) for i, b in enumerate(blocks)]
    total = sum(sizes)
    out = bytearray()
    start = 0
    for i, block in enumerate(blocks):
        nxt = start + sizes[i]
        last = i == len(blocks) - 1
        for code, port in block:
            off = len(out)
            out += _OP.pack(code, 8, (total - off + 4) if last else (nxt - off))
            out += _OP.pack(0, 0, port)
        if not last:
            off = len(out)
            out += _OP.pack(BC_JMP, 4, total - off)
        start = nxt
    assert len(out) == total
    return bytes(out)


def build_request(*, protocol: int = socket.IPPROTO_TCP, states: int = DATA_STATES,
                  ext: int = EXT_MASK, family: int = socket.AF_INET, seq: int = 1,
                  dports: frozenset[int] | None = None) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request (nlmsghdr + inet_diag_req_v2), with a kernel-side
    filter on destination ports when ``dports`` is given."""
    body = _REQ.pack(family, protocol, ext, 0, states, 0, 0, b"", b"", 0, b"")
    if dports:
        bc = port_filter(dports)
        body += _RTA.pack(4 + len(bc), INET_DIAG_REQ_BYTECODE) + bc + b"\0" * (-len(bc) % 4)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def dump(sock: socket.socket, request: bytes, buf: bytearray) -> Iterator[memoryview]:
    """Send one dump request and yield each inet_diag message (header included)."""
    sock.send(request)
    view = memoryview(buf)
    while True:
        n = sock.recv_into(buf)
        off = 0
        while off + 16 <= n:
            length, mtype = _NLMSGHDR.unpack_from(buf, off)[:2]
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                err = -struct.unpack_from("=i", buf, off + 16)[0]
                raise OSError(err, f"sock_diag dump failed: errno {err}")
            if mtype == SOCK_DIAG_BY_FAMILY:
                yield view[off + 16: off + length]
            off += (length + 3) & ~3
        if n == 0:
            return


def ports_of(msg: memoryview | bytes) -> tuple[int, int]:
    """(source port, destination port) of an inet_diag message."""
    return _PORTS.unpack_from(msg, 4)


def decode_message(msg: bytes | memoryview) -> dict[str, Any]:
    """One inet_diag_msg with its tcp_info, congestion control and BBR info, as a row.
    ValueError if it is shorter than an inet_diag_msg; anything longer decodes."""
    if len(msg) < INET_DIAG_MSG_SIZE:
        raise ValueError(f"inet_diag message of {len(msg)} bytes (at least "
                         f"{INET_DIAG_MSG_SIZE} expected)")
    family, state, _timer, _retrans = _MSG_HEAD.unpack_from(msg, 0)
    sport, dport = _PORTS.unpack_from(msg, 4)
    if family == socket.AF_INET:
        src = socket.inet_ntop(socket.AF_INET, bytes(msg[8:12]))
        dst = socket.inet_ntop(socket.AF_INET, bytes(msg[24:28]))
    else:
        src = socket.inet_ntop(socket.AF_INET6, bytes(msg[8:24]))
        dst = socket.inet_ntop(socket.AF_INET6, bytes(msg[24:40]))
    row: dict[str, Any] = {"src": src, "sport": sport, "dst": dst, "dport": dport,
                           "state": TCP_STATES.get(state, str(state)), "cc": None}
    info: dict[str, int] = {}
    sent_len = 0                  # bytes of tcp_info the kernel sent
    bbr: tuple[int, ...] | None = None
    off = INET_DIAG_MSG_SIZE
    n = len(msg)
    while off + 4 <= n:
        alen, atype = _RTA.unpack_from(msg, off)
        if alen < 4:
            break
        payload = msg[off + 4: off + alen]
        atype &= 0x3FFF
        if atype == INET_DIAG_INFO:
            raw = bytes(payload[:_TCP_INFO.size])
            if len(raw) < _TCP_INFO.size:
                raw += b"\0" * (_TCP_INFO.size - len(raw))
            info, sent_len = dict(zip(_TCP_INFO_NAMES, _TCP_INFO.unpack(raw))), len(payload)
        elif atype == INET_DIAG_CONG:
            row["cc"] = bytes(payload).split(b"\0", 1)[0].decode(errors="replace")
        elif atype == INET_DIAG_BBRINFO and len(payload) >= _BBR_INFO.size:
            bbr = _BBR_INFO.unpack_from(payload, 0)
        off += (alen + 3) & ~3
    if info:
        ssthresh = info["snd_ssthresh"]
        row.update({
            "ca_state": CA_STATES.get(info["ca_state"], str(info["ca_state"])),
            "cwnd": info["snd_cwnd"], "ssthresh": None if ssthresh >= 0x7FFFFFFF else ssthresh,
            "srtt_us": info["rtt"], "rttvar_us": info["rttvar"],
            "min_rtt_us": None if info["min_rtt"] == 0xFFFFFFFF else info["min_rtt"],
            "rto_us": info["rto"], "mss": info["snd_mss"],
            "delivery_rate_bps": info["delivery_rate"] * 8,
            "pacing_rate_bps": None if info["pacing_rate"] == 0xFFFFFFFFFFFFFFFF else info["pacing_rate"] * 8,
            "bytes_acked": info["bytes_acked"], "bytes_sent": info["bytes_sent"],
            "bytes_retrans": info["bytes_retrans"], "total_retrans": info["total_retrans"],
            "lost": info["lost"], "retransmits": info["retransmits"], "unacked": info["unacked"],
            "delivered": info["delivered"], "app_limited": (info["app_limited"] & 1),
        })
        row.update({column: info[field] if _TCP_INFO_END[field] <= sent_len else None
                    for column, field in _FLOW_CONTROL.items()})
    if bbr is not None:
        bw_lo, bw_hi, min_rtt, pacing_gain, cwnd_gain = bbr
        row.update({"bbr_bw_bps": ((bw_hi << 32) | bw_lo) * 8, "bbr_min_rtt_us": min_rtt,
                    "bbr_pacing_gain": pacing_gain / 256.0, "bbr_cwnd_gain": cwnd_gain / 256.0})
    return row


def iter_spool(data: bytes, damage: Damage | None = None) -> Iterator[tuple[float, int, bytes]]:
    """(time, namespace index, inet_diag message) records of a spool file's contents.

    Total: a record cut short (a full disk, a sampler still writing) ends the reading and
    one that cannot be read is skipped, each noted in ``damage``; no exception."""
    damage = damage if damage is not None else Damage("tcp_info spool", "samples", len(data))
    v2 = data.startswith(SPOOL_MAGIC)
    off = len(SPOOL_MAGIC) if v2 else 0
    while off < len(data):
        if off + _SPOOL.size > len(data):
            damage.truncate(off)
            return
        t, idx, length = _SPOOL.unpack_from(data, off)
        body = off + _SPOOL.size
        if body + length > len(data):
            damage.truncate(off)
            return
        if not math.isfinite(t):
            damage.skip(off)
        elif not v2:
            yield from _whole(t, idx, data[body: body + length], body, damage)
        else:
            yield from _netlink_read(t, idx, data, body, body + length, damage)
        off = body + length


def _whole(t: float, idx: int, msg: bytes, offset: int,
           damage: Damage) -> Iterator[tuple[float, int, bytes]]:
    if len(msg) < INET_DIAG_MSG_SIZE:
        damage.skip(offset)
    else:
        yield t, idx, msg


def _netlink_read(t: float, idx: int, data: bytes, pos: int, end: int,
                  damage: Damage) -> Iterator[tuple[float, int, bytes]]:
    """The inet_diag messages of one netlink read spooled at ``data[pos:end]``."""
    while pos + 16 <= end:
        mlen, mtype = _NLMSGHDR.unpack_from(data, pos)[:2]
        if mlen < 16 or pos + mlen > end:
            damage.skip(pos)     # the rest of this read cannot be framed
            return
        if mtype == SOCK_DIAG_BY_FAMILY:
            yield from _whole(t, idx, data[pos + 16: pos + mlen], pos, damage)
        pos += (mlen + 3) & ~3


def decode_spool(data: bytes, labels: list[str],
                 t0: float = 0.0) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (``CSV_COLUMNS``) from a spool file's bytes, ``t`` relative to ``t0``, and what
    was lost (empty when the spool was whole). Total: damaged bytes never raise."""
    damage = Damage("tcp_info spool", "samples", len(data))
    rows = []
    for t, idx, msg in iter_spool(data, damage):
        row = decode_message(msg)
        row["t"] = round(t - t0, 6)
        row["node"] = labels[idx] if idx < len(labels) else str(idx)
        rows.append(row)
    return rows, damage.losses(len(rows))


def listening(sock: socket.socket, port: int, *, protocol: int = socket.IPPROTO_TCP) -> bool:
    """Whether a socket of ``protocol`` is bound to ``port`` (TCP: listening) in this namespace."""
    states = LISTEN_STATES if protocol == socket.IPPROTO_TCP else 0xFFFFFFFF
    buf = bytearray(1 << 16)
    found = [ports_of(m)[0] for m in dump(sock, build_request(protocol=protocol, states=states,
                                                                  ext=0), buf)]
    return port in found


@dataclass
class SamplerStats:
    """How well the sampler kept its period."""

    interval: float
    ticks: int = 0
    missed: int = 0
    reads: int = 0  # netlink reads spooled (one per namespace and tick, unless a dump is big)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    realtime: bool = False

    @property
    def missed_fraction(self) -> float:
        total = self.ticks + self.missed
        return self.missed / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"interval_s": self.interval, "ticks": self.ticks, "missed": self.missed,
                "missed_fraction": self.missed_fraction, "reads": self.reads,
                "cpu_seconds": self.cpu_seconds, "wall_seconds": self.wall_seconds,
                "sched_fifo": self.realtime,
                "cpu_fraction": self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0}


@dataclass
class TcpInfoSampler:
    """Samples TCP sockets whose destination port is in ``ports`` (all if empty)
    in each (label, diag socket) pair every ``interval`` seconds."""

    sockets: list[tuple[str, socket.socket]]
    spool: Path
    interval: float = 0.010
    ports: frozenset[int] = frozenset()
    stats: SamplerStats = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)
    error: BaseException | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.stats = SamplerStats(self.interval)

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.sockets]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tcpinfo-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> SamplerStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        return self.stats

    def _run(self) -> None:
        cpu0 = time.thread_time()
        wall0 = time.monotonic()
        try:
            self.stats.realtime = _try_realtime()
            self._loop()
        except BaseException as exc:  # reported by the orchestrator, not swallowed
            self.error = exc
        finally:
            self.stats.cpu_seconds = time.thread_time() - cpu0
            self.stats.wall_seconds = time.monotonic() - wall0

    def _loop(self) -> None:
        """The hot loop: per tick and namespace one send and (usually) one recv_into of a
        pre-built request into one buffer, written out as it came. Sleeps to absolute
        deadlines on the period's grid; a period that is over before its tick started is
        counted as missed and skipped."""
        request = build_request(dports=self.ports or None)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        pack, hdr = _SPOOL.pack, _NLMSGHDR.unpack_from
        sleep_until = _absolute_sleeper()
        monotonic, interval = time.monotonic, self.interval
        stop = self._stop.is_set
        stats = self.stats
        socks = [(idx, sock.send, sock.recv_into) for idx, (_, sock) in enumerate(self.sockets)]
        for _, sock in self.sockets:  # the kernel audits the filter: fail here, loudly, if it objects
            for _ in dump(sock, request, buf):
                pass
        with open(self.spool, "wb", buffering=1 << 20) as out:
            write = out.write
            write(SPOOL_MAGIC)
            ticks = missed = reads = 0
            nxt = monotonic()
            while not stop():
                now = monotonic()
                for idx, send, recv_into in socks:
                    send(request)
                    while True:
                        n = recv_into(buf)
                        write(pack(now, idx, n))
                        write(view[:n])
                        reads += 1
                        # done when this read ends with NLMSG_DONE (or an error): walk headers
                        off = last = 0
                        while off + 16 <= n:
                            length, last = hdr(buf, off)[:2]
                            off += (length + 3) & ~3
                        if n == 0 or last == NLMSG_DONE:
                            break
                        if last == NLMSG_ERROR:
                            err = -struct.unpack_from("=i", buf, off - ((length + 3) & ~3) + 16)[0]
                            raise OSError(err, f"sock_diag dump failed: errno {err}")
                ticks += 1
                nxt += interval
                now = monotonic()
                if now > nxt:  # late: count the periods skipped, keep the grid
                    behind = int((now - nxt) / interval)
                    missed += behind
                    nxt += behind * interval
                sleep_until(nxt)
                stats.ticks, stats.missed, stats.reads = ticks, missed, reads


def _try_realtime(priority: int = 10) -> bool:
    """Run the calling thread under SCHED_FIFO (root only); False if not allowed."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread
        return True
    except (OSError, AttributeError):
        return False


def _absolute_sleeper() -> Callable[[float], None]:
    """sleep_until(t): sleep to CLOCK_MONOTONIC time ``t`` with clock_nanosleep(TIMER_ABSTIME)
    (no drift from computing a relative delay; ctypes releases the GIL), else time.sleep."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        nanosleep = libc.clock_nanosleep
    except (OSError, AttributeError):
        nanosleep = None
    if nanosleep is None:
        def fallback(t: float) -> None:
            time.sleep(max(0.0, t - time.monotonic()))
        return fallback

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
    ts = Timespec()
    ref = ctypes.byref(ts)
    nanosleep.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    clock, flags = time.CLOCK_MONOTONIC, 1  # TIMER_ABSTIME

    def sleep_until(t: float) -> None:
        sec = int(t)
        ts.tv_sec, ts.tv_nsec = sec, int((t - sec) * 1e9)
        while nanosleep(clock, flags, ref, None) == 4:  # EINTR: sleep again to the same time
            pass
    return sleep_until


def write_csv(rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...] = CSV_COLUMNS) -> None:
    """Rows as CSV with a fixed column order (empty cells for missing values)."""
    buf = io.StringIO()
    buf.write(",".join(columns) + "\n")
    for row in rows:
        buf.write(",".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + "\n")
    path.write_text(buf.getvalue())
