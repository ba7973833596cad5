"""Batched rtnetlink requests: what ``ip -batch`` does, with pyroute2's messages.

pyroute2's ``IPRoute`` makes one asyncio round trip per call, about a
millisecond each; a 1000-node topology needs ~10,000 of them. Here messages
are encoded with pyroute2's own classes (``ifinfmsg``, ``ifaddrmsg``,
``rtmsg``), queued, sent many per ``send`` on a plain netlink socket opened
in the current thread's namespace, and every acknowledgement is matched to
its request, so a failure still names the object that failed.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator

from pyroute2.netlink import (NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
                              NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR)
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from testbed.errors import RealizeError

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
RTM_NEWLINKPROP = 108
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
CHUNK = 256            # requests per send: bounded ack traffic per round
_HEADER = struct.Struct("=IHHII")   # nlmsghdr: len, type, flags, seq, pid


@dataclass
class _Request:
    data: bytes
    what: str
    ok_errnos: tuple[int, ...]


class Rtnl:
    """A synchronous rtnetlink socket in the namespace it was opened in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, 0))
        except OSError:
            self.sock.close()
            raise
        self.seq = 0
        self.queue: list[_Request] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- queueing

    def _queue(self, msg, msg_type: int, flags: int, what: str,
               ok_errnos: tuple[int, ...] = ()) -> None:
        self.seq += 1
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.queue.append(_Request(bytes(msg.data), what, ok_errnos))

    def veth(self, name: str, index: int, ns_fd: int, peer: str, peer_index: int,
             peer_ns_fd: int, mtu: int, what: str) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [
            ("IFLA_IFNAME", name), ("IFLA_NET_NS_FD", ns_fd), ("IFLA_MTU", mtu),
            ("IFLA_LINKINFO", {"attrs": [
                ("IFLA_INFO_KIND", "veth"),
                ("IFLA_INFO_DATA", {"attrs": [
                    ("VETH_INFO_PEER", {"index": peer_index, "attrs": [
                        ("IFLA_IFNAME", peer), ("IFLA_NET_NS_FD", peer_ns_fd),
                        ("IFLA_MTU", mtu)]})]})]})]
        self._queue(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, what)

    def altname(self, index: int, name: str, what: str) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [("IFLA_PROP_LIST", {"attrs": [("IFLA_ALT_IFNAME", name)]})]
        self._queue(msg, RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL, what)

    def up(self, index: int, what: str) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        self._queue(msg, RTM_NEWLINK, 0, what)

    def address(self, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                what: str) -> None:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        msg["attrs"] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
        self._queue(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, what, (errno.EEXIST,))

    def route(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
              gateway: ipaddress.IPv4Address | ipaddress.IPv6Address, oif: int,
              what: str) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        msg["dst_len"] = dst.prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_STATIC
        msg["type"] = RTN_UNICAST
        attrs = [("RTA_GATEWAY", str(gateway)), ("RTA_OIF", oif)]
        if dst.prefixlen:
            attrs.insert(0, ("RTA_DST", str(dst.network_address)))
        msg["attrs"] = attrs
        self._queue(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, what)

    # ---------------------------------------------------------------- sending

    def commit(self) -> None:
        """Send every queued request; raise RealizeError naming the first that failed."""
        queue, self.queue = self.queue, []
        for start in range(0, len(queue), CHUNK):
            chunk = queue[start:start + CHUNK]
            by_seq = {}
            first_seq = self.seq - len(queue) + start + 1
            for offset, request in enumerate(chunk):
                by_seq[first_seq + offset] = request
            self.sock.send(b"".join(r.data for r in chunk))
            failures = []
            pending = set(by_seq)
            while pending:
                for msg_type, seq, body in self._receive():
                    if msg_type == NLMSG_ERROR and seq in pending:
                        pending.discard(seq)
                        code = -struct.unpack_from("=i", body, _HEADER.size)[0]
                        request = by_seq[seq]
                        if code and code not in request.ok_errnos:
                            failures.append((request, code))
            if failures:
                request, code = failures[0]
                more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
                raise RealizeError(f"{request.what} failed: {os.strerror(code)} "
                                   f"[{errno.errorcode.get(code, code)}]{more}")

    def link_states(self) -> dict[int, str]:
        """{ifindex: operstate} for every interface in this namespace."""
        self.seq += 1
        msg = ifinfmsg()
        msg["header"]["type"] = RTM_GETLINK
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.sock.send(msg.data)
        states: dict[int, str] = {}
        while True:
            for msg_type, seq, body in self._receive():
                if seq != self.seq:
                    continue
                if msg_type == NLMSG_DONE:
                    return states
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body, _HEADER.size)[0]
                    raise RealizeError(f"listing interfaces failed: {os.strerror(code)}")
                if msg_type == RTM_NEWLINK:
                    link = ifinfmsg(body)
                    link.decode()
                    states[link["index"]] = link.get_attr("IFLA_OPERSTATE")

    def _receive(self) -> Iterator[tuple[int, int, bytes]]:
        """The messages of one ``recv``: (type, sequence number, whole message)."""
        data = self.sock.recv(1 << 20)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, msg_type, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                return
            yield msg_type, seq, data[offset:offset + length]
            offset += (length + 3) & ~3
