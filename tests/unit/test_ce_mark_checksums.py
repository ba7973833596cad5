"""A CE-marked packet goes back to the kernel whole, and NFQUEUE marks a packet with a new
payload CHECKSUM_NONE: with the sender's checksum offload on, its TCP checksum field held
only the pseudo-header's sum, so the receiver dropped every marked packet (a loss where a
CE mark was meant; found once offloads went off for AQM links: no CE ever echoed).
``mark_ce`` now makes the TCP/UDP checksum whole, over IPv4 and IPv6."""

from __future__ import annotations

import random
import socket
import struct

import pytest

from testbed.emulation.bottleneck import fill_transport_checksum, mark_ce


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo_sum(pseudo: bytes) -> bytes:
    """What checksum offload leaves in the field: the pseudo header's sum, not inverted."""
    s = sum(struct.unpack(f"!{len(pseudo) // 2}H", pseudo))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s.to_bytes(2, "big")


def packet(version: int, proto: int, payload: bytes, partial: bool) -> tuple[bytearray, bytes]:
    """(an ECT(0) packet, its pseudo header)."""
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1, 2, 5 << 4, 0x18, 1000, 0, 0))
        at = 16
    else:
        l4 = bytearray(struct.pack("!HHHH", 40000, 5201, 8 + len(payload), 0))
        at = 6
    l4 += payload
    if version == 4:
        src, dst = socket.inet_aton("10.0.0.1"), socket.inet_aton("10.0.1.2")
        pseudo = src + dst + bytes((0, proto)) + len(l4).to_bytes(2, "big")
        head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0x02, 20 + len(l4), 1, 0, 64,
                                     proto, 0, src, dst))
        head[10:12] = csum(bytes(head)).to_bytes(2, "big")
    else:
        src = socket.inet_pton(socket.AF_INET6, "fd00::1")
        dst = socket.inet_pton(socket.AF_INET6, "fd00:1::2")
        pseudo = src + dst + len(l4).to_bytes(4, "big") + bytes((0, 0, 0, proto))
        head = bytearray(struct.pack("!IHBB16s16s", (6 << 28) | (2 << 20), len(l4), proto, 64,
                                     src, dst))
    l4[at:at + 2] = pseudo_sum(pseudo) if partial else csum(pseudo + bytes(l4)).to_bytes(2, "big")
    return bytearray(head + l4), pseudo


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("proto", [6, 17])
@pytest.mark.parametrize("partial", [False, True], ids=["whole", "offloaded"])
@pytest.mark.parametrize("size", [0, 1, 1447, 1448])
def test_a_marked_packet_has_whole_checksums(version, proto, partial, size):
    pkt, pseudo = packet(version, proto, random.Random(size).randbytes(size), partial)
    head = 20 if version == 4 else 40
    assert mark_ce(pkt)
    assert (pkt[1] & 3 == 3) if version == 4 else ((pkt[1] >> 4) & 3 == 3)
    if version == 4:
        assert csum(bytes(pkt[:20])) == 0
    assert csum(pseudo + bytes(pkt[head:])) == 0


def test_what_it_does_not_know_is_left_alone():
    pkt, _ = packet(4, 17, b"abc", False)
    pkt[26:28] = b"\0\0"                      # IPv4 UDP sent without a checksum
    assert not fill_transport_checksum(pkt) and pkt[26:28] == b"\0\0"
    icmp = bytearray(pkt)
    icmp[9] = 1
    assert not fill_transport_checksum(icmp)
    short, _ = packet(4, 6, b"", False)
    assert not fill_transport_checksum(short[:30])    # cut before the TCP checksum
