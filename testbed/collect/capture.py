"""Packet capture with tcpdump in a node's namespace (snaplen-limited, to a
pcap file), and a pure-Python pcap analysis into per-flow TCP goodput,
retransmissions and RTT samples.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from testbed.traffic.base import NodeLike

_PCAP_HDR = struct.Struct("<IHHiIII")
_REC_HDR_LE = struct.Struct("<IIII")
_REC_HDR_BE = struct.Struct(">IIII")
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113


def tcpdump_check() -> list[str]:
    if shutil.which("tcpdump") is None:
        return ["tcpdump is not installed; install it with 'apt-get install tcpdump' "
                "or set 'capture: {enabled: false}' in the workload"]
    return []


def start_capture(node: NodeLike, ifname: str, pcap: Path, snaplen: int) -> subprocess.Popen:
    """tcpdump on ``ifname`` in ``node``, writing ``pcap``; stderr goes next to it."""
    err = open(pcap.with_suffix(".stderr"), "wb")
    with err:
        return node.popen(["tcpdump", "-i", ifname, "-s", str(snaplen), "-n", "-U", "-w", str(pcap),
                           "tcp", "or", "udp"], stdout=subprocess.DEVNULL, stderr=err,
                          stdin=subprocess.DEVNULL)


def stop_capture(proc: subprocess.Popen, pcap: Path) -> dict[str, Any]:
    """Stop tcpdump (it flushes on SIGTERM) and read its packet counters."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    text = pcap.with_suffix(".stderr").read_text(errors="replace") if pcap.with_suffix(".stderr").exists() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) packets? (captured|received by filter|dropped by kernel)", text)}
    return {"captured": counts.get("captured"), "dropped_by_kernel": counts.get("dropped by kernel"),
            "returncode": proc.returncode}


def read_pcap(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    """(time, original length, captured bytes from the IP header on) per packet."""
    if len(data) < _PCAP_HDR.size:
        return
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        rec, scale = _REC_HDR_LE, 1e-6 if magic == 0xA1B2C3D4 else 1e-9
        linktype = struct.unpack_from("<I", data, 20)[0]
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        rec, scale = _REC_HDR_BE, 1e-6 if magic == 0xD4C3B2A1 else 1e-9
        linktype = struct.unpack_from(">I", data, 20)[0]
    else:
        raise ValueError("not a pcap file")
    skip = {LINKTYPE_ETHERNET: 14, LINKTYPE_LINUX_SLL: 16}.get(linktype)
    if skip is None:
        raise ValueError(f"unsupported pcap link type {linktype}")
    off = _PCAP_HDR.size
    while off + 16 <= len(data):
        sec, frac, incl, orig = rec.unpack_from(data, off)
        off += 16
        frame = data[off: off + incl]
        off += incl
        ethertype = struct.unpack_from(">H", frame, skip - 2)[0] if len(frame) >= skip else 0
        if ethertype == 0x0800:
            yield sec + frac * scale, orig - skip, frame[skip:]


@dataclass
class _Dir:
    first_t: float = 0.0
    last_t: float = 0.0
    isn: int | None = None
    high: int = 0            # highest relative sequence end sent
    payload: int = 0         # unique payload bytes
    segments: int = 0
    retransmits: int = 0
    retrans_bytes: int = 0
    pending: list[tuple[int, float]] = field(default_factory=list)   # (seq end, send time)
    retransmitted_below: int = 0
    rtt_samples: list[tuple[float, float]] = field(default_factory=list)  # (t, rtt s)


def _unwrap(seq: int, isn: int) -> int:
    return (seq - isn) & 0xFFFFFFFF


def analyze_pcap(data: bytes) -> dict[str, dict[str, Any]]:
    """Per TCP direction (``src:sport>dst:dport``) goodput, retransmissions, RTT samples."""
    dirs: dict[tuple[str, int, str, int], _Dir] = {}
    for t, _orig, ip in read_pcap(data):
        if len(ip) < 20 or ip[9] != 6:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from(">H", ip, 2)[0]
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        tcp = ip[ihl:]
        if len(tcp) < 20:
            continue
        sport, dport, seq, ack, off_flags = struct.unpack_from(">HHIIH", tcp, 0)
        doff = (off_flags >> 12) * 4
        flags = off_flags & 0x3F
        plen = total - ihl - doff
        key = (src, sport, dst, dport)
        d = dirs.get(key)
        if d is None:
            d = dirs[key] = _Dir(first_t=t, isn=seq if not flags & 0x02 else (seq + 1) & 0xFFFFFFFF)
        d.last_t = t
        if plen > 0 and d.isn is not None:
            start = _unwrap(seq, d.isn)
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
        if flags & 0x10:
            rev = dirs.get((dst, dport, src, sport))
            if rev is not None and rev.isn is not None and rev.pending:
                acked = _unwrap(ack, rev.isn)
                i = 0
                while i < len(rev.pending) and rev.pending[i][0] <= acked:
                    i += 1
                if i:
                    end, sent = rev.pending[i - 1]
                    if end > rev.retransmitted_below:
                        rev.rtt_samples.append((t, t - sent))
                    del rev.pending[:i]
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
