"""TCP headers out of a pcap file, whole: what a time-sequence graph needs.

Pure and total: bytes that are not a pcap (or of a link type not read) give no
packets and a reason; a file cut short gives the packets before the cut and
says where. Each packet keeps its TCP header fields as sent: sequence and
acknowledgement numbers (32 bits, as on the wire), flags, the advertised
window (unscaled), the window scale of a SYN and SACK blocks. IPv4 over
Ethernet or Linux cooked capture, as tcpdump writes them in a testbed.

The ground floor, so that ``analysis`` (time-sequence graphs) reads what
``collect.capture`` writes without importing the code that writes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

_PCAP_HDR = struct.Struct("<IHHiIII")
_LINK_HEADER = {1: 14, 113: 16}          # Ethernet, Linux cooked (SLL)
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
OPT_END, OPT_NOP, OPT_WSCALE, OPT_SACK = 0, 1, 3, 5


@dataclass(frozen=True)
class TcpPacket:
    """One TCP segment as captured."""

    t: float                       # capture time, seconds since the epoch
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    window: int                    # as in the header: shift by the peer's wscale after SYN
    payload: int                   # bytes of payload (from the IP length, not the snaplen)
    wscale: int | None = None      # window scale option (SYN only)
    sack: tuple[tuple[int, int], ...] = ()

    @property
    def key(self) -> tuple[str, int, str, int]:
        return self.src, self.sport, self.dst, self.dport


@dataclass
class PcapRead:
    """The packets read, and why reading stopped early (None: the file was whole)."""

    packets: list[TcpPacket]
    problem: str | None = None


def _records(data: bytes, read: PcapRead) -> Iterator[tuple[float, bytes]]:
    """(time, bytes from the IP header on) of each IPv4 frame."""
    if len(data) < _PCAP_HDR.size:
        read.problem = f"only {len(data)} bytes, not a pcap file"
        return
    magic = struct.unpack_from("<I", data)[0]
    order = {0xA1B2C3D4: "<", 0xA1B23C4D: "<", 0xD4C3B2A1: ">", 0x4D3CB2A1: ">"}.get(magic)
    if order is None:
        read.problem = f"not a pcap file (magic {magic:#010x})"
        return
    scale = 1e-9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e-6
    skip = _LINK_HEADER.get(struct.unpack_from(order + "I", data, 20)[0])
    if skip is None:
        read.problem = "unsupported pcap link type"
        return
    rec = struct.Struct(order + "IIII")
    off = _PCAP_HDR.size
    while off < len(data):
        if off + rec.size > len(data) or off + rec.size + rec.unpack_from(data, off)[2] > len(data):
            read.problem = f"cut short at byte {off} of {len(data)}"
            return
        sec, frac, incl, _ = rec.unpack_from(data, off)
        frame = data[off + rec.size: off + rec.size + incl]
        off += rec.size + incl
        if len(frame) >= skip and struct.unpack_from(">H", frame, skip - 2)[0] == 0x0800:
            yield sec + frac * scale, frame[skip:]


def _options(raw: bytes) -> tuple[int | None, tuple[tuple[int, int], ...]]:
    """Window scale and SACK blocks among TCP options (as far as they were captured)."""
    wscale, sack, i = None, [], 0
    while i < len(raw):
        kind = raw[i]
        if kind == OPT_END:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= len(raw) or raw[i + 1] < 2:
            break
        length = raw[i + 1]
        body = raw[i + 2: i + length]
        if kind == OPT_WSCALE and len(body) == 1:
            wscale = body[0]
        elif kind == OPT_SACK and len(body) % 8 == 0:
            sack = [struct.unpack_from(">II", body, j) for j in range(0, len(body), 8)]
        i += length
    return wscale, tuple(sack)


def tcp_packet(t: float, ip: bytes) -> TcpPacket | None:
    """The TCP header of an IPv4 packet; None for anything else or a malformed one."""
    if len(ip) < 20 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    if ihl < 20 or len(ip) < ihl + 20:
        return None
    total = struct.unpack_from(">H", ip, 2)[0]
    sport, dport, seq, ack, off_flags, window = struct.unpack_from(">HHIIHH", ip, ihl)
    doff = (off_flags >> 12) * 4
    if doff < 20:
        return None
    wscale, sack = _options(ip[ihl + 20: ihl + doff])
    return TcpPacket(t, ".".join(map(str, ip[12:16])), sport, ".".join(map(str, ip[16:20])),
                     dport, seq, ack, off_flags & 0x3F, window, max(total - ihl - doff, 0),
                     wscale, sack)


def read_tcp(data: bytes) -> PcapRead:
    """Every TCP packet of a pcap file's bytes, in capture order."""
    read = PcapRead([])
    for t, ip in _records(data, read):
        packet = tcp_packet(t, ip)
        if packet is not None:
            read.packets.append(packet)
    return read
