"""The few rtnetlink messages the realizer sends and reads, packed with ``struct``.

pyroute2's message classes are general but slow for bulk work: encoding one
message costs ~0.2 ms and decoding a link ~0.5 ms, and importing pyroute2 adds
~0.25 s to every CLI start. A 100-node ``up`` spent more time there than in
the kernel. The shapes here are built byte for byte as pyroute2 builds them
(tests/unit/test_nlmsg.py compares both), and decoding reads only the
attributes asked for.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Iterator

# netlink (linux/netlink.h) and rtnetlink (linux/rtnetlink.h, linux/if_link.h) constants
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
RTM_NEWLINKPROP = 108
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_PROP_LIST = 52
IFLA_ALT_IFNAME = 53
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

HEADER = struct.Struct("=IHHII")       # nlmsghdr: len, type, flags, seq, pid
IFINFO = struct.Struct("=BxHiII")      # ifinfomsg: family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg: family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")    # rtmsg: family, dst_len, src_len, tos, table, proto,
                                       #        scope, type, flags
_ATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")


def message(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), msg_type, flags, seq, 0) + body


def attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def asciiz(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def ip(kind: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return attr(kind, address.packed)


def family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def ifinfo(index: int, *attrs: bytes, flags: int = 0, change: int = 0) -> bytes:
    return IFINFO.pack(0, 0, index, flags, change) + b"".join(attrs)


def veth(name: str, index: int, ns_fd: int, peer: str, peer_index: int, peer_ns_fd: int,
         mtu: int, *, flags: int = 0) -> bytes:
    """RTM_NEWLINK body of a veth pair, both ends placed in their namespaces.

    ``flags`` (e.g. IFF_UP) are set on the first end as the kernel makes it, as
    ``ip link add ... up`` does. Not on the peer: the kernel would set them
    before the pair is joined, and a veth without its peer cannot go up (ENOTCONN).
    """
    peer_body = ifinfo(peer_index, asciiz(IFLA_IFNAME, peer), u32(IFLA_NET_NS_FD, peer_ns_fd),
                       u32(IFLA_MTU, mtu))
    return ifinfo(index, asciiz(IFLA_IFNAME, name), u32(IFLA_NET_NS_FD, ns_fd), u32(IFLA_MTU, mtu),
                  attr(IFLA_LINKINFO, asciiz(IFLA_INFO_KIND, "veth") +
                       attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))),
                  flags=flags, change=flags)


def altname(index: int, name: str) -> bytes:
    return ifinfo(index, attr(IFLA_PROP_LIST | NLA_F_NESTED, asciiz(IFLA_ALT_IFNAME, name)))


def address(index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bytes:
    return IFADDR.pack(family(iface.version), iface.network.prefixlen, 0, 0, index) + \
        ip(IFA_LOCAL, iface.ip) + ip(IFA_ADDRESS, iface.ip)


def route(dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
          gateway: ipaddress.IPv4Address | ipaddress.IPv6Address, oif: int, *, table: int,
          proto: int, rtype: int) -> bytes:
    body = RTMSG.pack(family(dst.version), dst.prefixlen, 0, 0, table, proto, 0, rtype, 0)
    if dst.prefixlen:
        body += ip(RTA_DST, dst.network_address)
    return body + ip(RTA_GATEWAY, gateway) + u32(RTA_OIF, oif)


# ---------------------------------------------------------------- decoding


def attrs(data: bytes, offset: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each attribute in ``data[offset:end]``; nested flags masked off."""
    end = len(data) if end is None else end
    while offset + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            return
        yield kind & NLA_TYPE_MASK, data[offset + _ATTR.size:offset + length]
        offset += (length + 3) & ~3


def link_index(msg: bytes) -> int:
    """The interface index of a whole RTM_NEWLINK message."""
    return _I32.unpack_from(msg, HEADER.size + 4)[0]


def link_attrs(msg: bytes) -> Iterator[tuple[int, bytes]]:
    return attrs(msg, HEADER.size + IFINFO.size)


def operstate(msg: bytes) -> str | None:
    for kind, payload in link_attrs(msg):
        if kind == IFLA_OPERSTATE:
            return OPERSTATES[payload[0]] if payload[0] < len(OPERSTATES) else str(payload[0])
    return None


def altnames(msg: bytes) -> list[str]:
    names = []
    for kind, payload in link_attrs(msg):
        if kind == IFLA_PROP_LIST:
            names += [p.rstrip(b"\0").decode(errors="replace")
                      for k, p in attrs(payload, 0) if k == IFLA_ALT_IFNAME]
    return names


def error_code(msg: bytes) -> int:
    """The positive errno of a whole NLMSG_ERROR message (0 for an acknowledgement)."""
    return -_I32.unpack_from(msg, HEADER.size)[0]
