"""Packet capture with tcpdump in a node's namespace (snaplen-limited, to a
pcap file, every packet handed over and written as it comes), its counters
(captured, received by filter, dropped) and what they say was lost, and a
pure-Python pcap analysis into per-flow TCP goodput, retransmissions and RTT
samples. Sequence numbers are unwrapped to 64 bits per direction, so flows
past 4 GiB count on; a pcap cut short is read up to the cut and says so.

RTT samples come from matching a data segment to the first ACK that covers
it, skipping retransmitted ranges (Karn). They are the RTT from the capture
point to the receiver and back, which at the bottleneck's sending side
includes the bottleneck delay and the receiver's access link.
"""

from __future__ import annotations

import re
import shutil
import signal
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from testbed.collect.damage import Damage
from testbed.errors import WorkloadError
from testbed.pcapfile import tcp_packet
from testbed.traffic.base import NodeLike

_PCAP_HDR = struct.Struct("<IHHiIII")
_REC_HDR_LE = struct.Struct("<IIII")
_REC_HDR_BE = struct.Struct(">IIII")
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
READY_TIMEOUT = 5.0    # s for tcpdump to open its socket
DRAIN_QUIET = 0.5      # s without a new packet before the captures are stopped
DRAIN_LIMIT = 3.0      # s to wait for that at most


def tcpdump_check() -> list[str]:
    if shutil.which("tcpdump") is None:
        return ["tcpdump is not installed; install it with 'apt-get install tcpdump' "
                "or set 'capture: {enabled: false}' in the workload"]
    return []


def start_capture(node: NodeLike, ifname: str, pcap: Path, snaplen: int) -> subprocess.Popen:
    """tcpdump on ``ifname`` in ``node``, writing ``pcap``; stderr goes next to it.

    ``--immediate-mode``: each packet goes to tcpdump as it arrives; without it the
    kernel holds packets in a ring block for up to a second, and those still there when
    tcpdump stops are counted as received but never written (a short flow's whole
    capture, the FIN of a long one). ``-U``: each packet is written out as it comes."""
    err = open(pcap.with_suffix(".stderr"), "wb")
    with err:
        return node.popen(["tcpdump", "-i", ifname, "-s", str(snaplen), "-n", "-U",
                           "--immediate-mode", "-w", str(pcap), "tcp", "or", "udp"],
                          stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)


def wait_capturing(proc: subprocess.Popen, pcap: Path, label: str,
                   timeout: float = READY_TIMEOUT) -> None:
    """Return once tcpdump says it is listening (its socket is open: packets from now on
    are kept); ``WorkloadError`` if it exits or says nothing within ``timeout``."""
    err = pcap.with_suffix(".stderr")
    deadline = time.monotonic() + timeout
    while "listening on" not in _text(err):
        if proc.poll() is not None:
            raise WorkloadError(f"capture on {label}: tcpdump exited (status {proc.returncode}) "
                                f"before capturing: {_text(err).strip()[-300:] or '(no output)'}")
        if time.monotonic() > deadline:
            raise WorkloadError(f"capture on {label}: tcpdump did not start capturing within "
                                f"{timeout:g} s: {_text(err).strip()[-300:] or '(no output)'}")
        time.sleep(0.02)


def stop_captures(captures: list[tuple[subprocess.Popen, Path, str]], *, quiet: float = DRAIN_QUIET,
                  limit: float = DRAIN_LIMIT) -> dict[str, dict[str, Any]]:
    """Once no capture has grown for ``quiet`` s (the flows' last ACKs and FINs are still on
    the links when their processes end; at most ``limit`` s), stop each tcpdump and read
    its packet counters (``stop_capture``), by label."""
    _drain([pcap for _, pcap, _ in captures], quiet, limit)
    return {label: stop_capture(proc, pcap) for proc, pcap, label in captures}


def _drain(pcaps: list[Path], quiet: float, limit: float) -> None:
    def sizes() -> list[int]:
        return [p.stat().st_size if p.exists() else -1 for p in pcaps]
    start = changed = time.monotonic()
    last = sizes()
    while pcaps and time.monotonic() - changed < quiet and time.monotonic() - start < limit:
        time.sleep(0.05)
        now = sizes()
        if now != last:
            last, changed = now, time.monotonic()


def stop_capture(proc: subprocess.Popen, pcap: Path) -> dict[str, Any]:
    """Stop tcpdump (SIGTERM: it writes out what it has and prints its counters), and
    its counters with what it lost (``lost``: None if nothing)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    stats: dict[str, Any] = {**capture_counts(_text(pcap.with_suffix(".stderr"))),
                             "returncode": proc.returncode}
    stats["lost"] = capture_loss(stats)
    return stats


def capture_counts(stderr: str) -> dict[str, int | None]:
    """The packet counters tcpdump prints when it stops (None for those it did not print)."""
    found = {k: int(v) for v, k in re.findall(
        r"^(\d+) packets? (captured|received by filter|dropped by kernel|dropped by interface)$",
        stderr, re.M)}
    return {"captured": found.get("captured"), "received_by_filter": found.get("received by filter"),
            "dropped_by_kernel": found.get("dropped by kernel"),
            "dropped_by_interface": found.get("dropped by interface")}


def capture_loss(stats: dict[str, Any]) -> str | None:
    """What a capture lost, from its counters (``stop_capture``), for the run's record."""
    if stats.get("returncode") == -signal.SIGKILL:
        return "tcpdump did not stop within 5 s and was killed: its last packets are not written"
    captured, received = stats.get("captured"), stats.get("received_by_filter")
    if captured is None or received is None:
        return "tcpdump printed no packet counts: whether it lost packets is unknown"
    lost = []
    if captured < received:
        lost.append(f"{received - captured} of the {received} packets its filter passed were "
                    f"not written ({captured} captured)")
    for key, where in (("dropped_by_kernel", "kernel"), ("dropped_by_interface", "interface")):
        if stats.get(key):
            lost.append(f"the {where} dropped {stats[key]} packets")
    return "; ".join(lost) or None


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def read_pcap(data: bytes, damage: Damage | None = None) -> Iterator[tuple[float, int, bytes]]:
    """(time, original length, captured bytes from the IP header on) per IPv4 packet.

    Total: a file that is not a pcap of a link type we read yields nothing, one cut short
    (tcpdump killed mid-write, a full disk) ends early; both are noted in ``damage``."""
    damage = damage if damage is not None else Damage("pcap", "packets", len(data))
    if len(data) < _PCAP_HDR.size:
        damage.unreadable = (f"only {len(data)} bytes, not even a pcap header (tcpdump wrote "
                             "nothing)")
        return
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        rec, scale = _REC_HDR_LE, 1e-6 if magic == 0xA1B2C3D4 else 1e-9
        linktype = struct.unpack_from("<I", data, 20)[0]
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        rec, scale = _REC_HDR_BE, 1e-6 if magic == 0xD4C3B2A1 else 1e-9
        linktype = struct.unpack_from(">I", data, 20)[0]
    else:
        damage.unreadable = f"not a pcap file (magic {magic:#010x})"
        return
    skip = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}.get(linktype)
    if skip is None:
        damage.unreadable = f"unsupported pcap link type {linktype}"
        return
    off = _PCAP_HDR.size
    while off < len(data):
        if off + rec.size > len(data):
            damage.truncate(off)
            return
        sec, frac, incl, orig = rec.unpack_from(data, off)
        if off + rec.size + incl > len(data):
            damage.truncate(off)
            return
        frame = data[off + rec.size: off + rec.size + incl]
        off += rec.size + incl
        ethertype = struct.unpack_from(">H", frame, skip - 2)[0] if len(frame) >= skip else 0
        if ethertype == 0x0800:
            yield sec + frac * scale, orig - skip, frame[skip:]


@dataclass
class _Dir:
    first_t: float = 0.0
    last_t: float = 0.0
    isn: int | None = None
    high: int = 0            # highest sequence end sent, as a 64-bit offset from isn
    payload: int = 0         # unique payload bytes
    segments: int = 0
    retransmits: int = 0
    retrans_bytes: int = 0
    pending: list[tuple[int, float]] = field(default_factory=list)   # (seq end, send time)
    retransmitted_below: int = 0
    rtt_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, rtt s)


SEQ_MOD = 1 << 32


def _unwrap(seq: int, isn: int, near: int) -> int:
    """A 32-bit sequence (or ack) number as a 64-bit offset from ``isn``: the one nearest
    ``near``, an offset the same direction reached lately. TCP's numbers wrap every 4 GiB;
    a flow's offsets keep counting (a segment never lies 2 GiB from the highest one)."""
    rel = (seq - isn) % SEQ_MOD
    return near + (rel - near + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2


def _data(d: _Dir, seq: int, plen: int, t: float) -> None:
    """A segment of ``plen`` payload bytes at ``seq`` in direction ``d``."""
    assert d.isn is not None
    start = _unwrap(seq, d.isn, d.high)
    end = start + plen
    d.segments += 1
    if end <= d.high:
        d.retransmits += 1
        d.retrans_bytes += plen
        d.retransmitted_below = max(d.retransmitted_below, end)
    else:
        d.payload += end - max(start, d.high)
        d.high = end
        d.pending.append((end, t))


def _acked(rev: _Dir, ack: int, t: float) -> None:
    """An ACK of ``ack`` for direction ``rev``: an RTT sample from the newest segment it
    covers, unless that range was retransmitted (Karn)."""
    assert rev.isn is not None
    acked = _unwrap(ack, rev.isn, rev.high)
    i = 0
    while i < len(rev.pending) and rev.pending[i][0] <= acked:
        i += 1
    if i:
        end, sent = rev.pending[i - 1]
        if end > rev.retransmitted_below:
            rev.rtt_samples.append((t, t - sent))
        del rev.pending[:i]


def analyze_pcap(data: bytes) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Per TCP direction (``src:sport>dst:dport``) goodput, retransmissions, RTT samples;
    and what could not be read of the capture (empty when it was whole). Total: bytes that
    are not a pcap, or a cut one, are losses, never an exception."""
    damage = Damage("pcap", "packets", len(data))
    dirs: dict[tuple[str, int, str, int], _Dir] = {}
    packets = 0
    for t, _orig, ip in read_pcap(data, damage):
        packets += 1
        seg = tcp_packet(t, ip)
        if seg is None:
            continue
        key, seq, ack, flags, plen = (seg.src, seg.sport, seg.dst, seg.dport), seg.seq, \
            seg.ack, seg.flags, seg.payload
        d = dirs.get(key)
        if d is None:
            d = dirs[key] = _Dir(first_t=t, isn=seq if not flags & 0x02 else (seq + 1) % SEQ_MOD)
        d.last_t = t
        if plen > 0:
            _data(d, seq, plen, t)
        rev = dirs.get((key[2], key[3], key[0], key[1]))
        if flags & 0x10 and rev is not None and rev.pending:
            _acked(rev, ack, t)
    return _summaries(dirs), damage.losses(packets)


def _summaries(dirs: dict[tuple[str, int, str, int], _Dir]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for (src, sport, dst, dport), d in dirs.items():
        if d.payload == 0:
            continue
        span = d.last_t - d.first_t
        rtts = sorted(r for _, r in d.rtt_samples)
        out[f"{src}:{sport}>{dst}:{dport}"] = {
            "src": src, "sport": sport, "dst": dst, "dport": dport,
            "bytes": d.payload, "seconds": span, "goodput_bps": d.payload * 8 / span if span > 0 else None,
            "segments": d.segments, "retransmits": d.retransmits, "retrans_bytes": d.retrans_bytes,
            "rtt_samples": len(rtts),
            "rtt_ms_p50": rtts[len(rtts) // 2] * 1e3 if rtts else None,
            "rtt_ms_min": rtts[0] * 1e3 if rtts else None,
            "rtt_series": [(round(a, 6), round(b * 1e3, 3)) for a, b in d.rtt_samples],
        }
    return out


def read_capture(pcap: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``analyze_pcap`` of a capture file; one that was never written is a loss."""
    try:
        data = pcap.read_bytes()
    except OSError as exc:
        return {}, [f"pcap {pcap.name} cannot be read: {exc.strerror}"]
    return analyze_pcap(data)
