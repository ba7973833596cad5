"""Batched rtnetlink requests: what ``ip -batch`` does.

pyroute2's ``IPRoute`` makes one asyncio round trip per call, about a
millisecond each; a 1000-node topology needs ~10,000 of them. Here messages
are packed by ``nlmsg`` (byte for byte what pyroute2's ``ifinfmsg``,
``ifaddrmsg`` and ``rtmsg`` encode, at a fraction of the cost), queued, sent
many per ``send`` on a plain netlink socket opened in the current thread's
namespace, and every answer is matched to its request by sequence number,
so a failure still names the object that failed.

Only the last request of a send asks for an acknowledgement. The kernel
handles the requests of one send in order, within that send, and answers
each one that fails with an error whatever its flags; so when the last one's
acknowledgement arrives, every error of the send has arrived before it. One
acknowledgement per request cost a datagram, a wake-up and a ``recv`` each.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Iterator

from testbed.errors import RealizeError
from testbed.kernel import nlmsg
from testbed.kernel.nlmsg import (NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
                                   NLM_F_REPLACE, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
                                   RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWLINKPROP,
                                   RTM_NEWROUTE)

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RTN_UNICAST = 1
CHUNK = 256            # requests per send: bounded error traffic per round
RECEIVE_BUFFER = 1 << 16   # the kernel sends at most 32 KiB per netlink datagram
_HEADER = nlmsg.HEADER


@dataclass
class _Request:
    msg_type: int
    flags: int
    body: bytes
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
        self._buffer = bytearray(RECEIVE_BUFFER)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- queueing

    def _queue(self, body: bytes, msg_type: int, flags: int, what: str,
               ok_errnos: tuple[int, ...] = ()) -> None:
        self.queue.append(_Request(msg_type, NLM_F_REQUEST | flags, body, what, ok_errnos))

    def veth(self, name: str, index: int, ns_fd: int, peer: str, peer_index: int,
             peer_ns_fd: int, mtu: int, what: str, *, up: bool = False) -> None:
        """A veth pair, each end in its namespace; ``up``: the first end set up as it is made."""
        self._queue(nlmsg.veth(name, index, ns_fd, peer, peer_index, peer_ns_fd, mtu,
                               flags=IFF_UP if up else 0),
                    RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, what)

    def altname(self, index: int, name: str, what: str) -> None:
        self._queue(nlmsg.altname(index, name), RTM_NEWLINKPROP, NLM_F_CREATE | NLM_F_EXCL, what)

    def up(self, index: int, what: str) -> None:
        self._queue(nlmsg.ifinfo(index, flags=IFF_UP, change=IFF_UP), RTM_NEWLINK, 0, what)

    def address(self, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                what: str) -> None:
        self._queue(nlmsg.address(index, iface), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, what,
                    (errno.EEXIST,))

    def route(self, dst: ipaddress.IPv4Network | ipaddress.IPv6Network,
              gateway: ipaddress.IPv4Address | ipaddress.IPv6Address, oif: int,
              what: str) -> None:
        self._queue(nlmsg.route(dst, gateway, oif, table=RT_TABLE_MAIN, proto=RTPROT_STATIC,
                                rtype=RTN_UNICAST),
                    RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, what)

    # ---------------------------------------------------------------- sending

    def commit(self) -> None:
        """Send every queued request; raise RealizeError naming the first that failed."""
        queue, self.queue = self.queue, []
        for start in range(0, len(queue), CHUNK):
            failures = self._send_chunk(queue[start:start + CHUNK])
            if failures:
                request, code = failures[0]
                more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
                raise RealizeError(f"{request.what} failed: {os.strerror(code)} "
                                   f"[{errno.errorcode.get(code, code)}]{more}")

    def _send_chunk(self, chunk: list[_Request]) -> list[tuple[_Request, int]]:
        """Send ``chunk`` in one datagram, the last request asking for an acknowledgement
        (module docstring); the requests that failed, with their errno, in order."""
        by_seq: dict[int, _Request] = {}
        data = []
        for request in chunk:
            self.seq += 1
            by_seq[self.seq] = request
            flags = request.flags | (NLM_F_ACK if request is chunk[-1] else 0)
            data.append(nlmsg.message(request.msg_type, flags, self.seq, request.body))
        last = self.seq
        self.sock.send(b"".join(data))
        failures = []
        while True:
            for msg_type, seq, message in self._receive():
                if msg_type != NLMSG_ERROR or seq not in by_seq:
                    continue
                code = nlmsg.error_code(message)
                request = by_seq[seq]
                if code and code not in request.ok_errnos:
                    failures.append((request, code))
                if seq == last:
                    return failures

    def link_states(self) -> dict[int, str | None]:
        """{ifindex: operstate} for every interface in this namespace."""
        return {nlmsg.link_index(link): nlmsg.operstate(link)
                for link in self._get_links(NLM_F_DUMP, 0, "listing interfaces")}

    def operstates(self, indexes: list[int]) -> dict[int, str | None]:
        """{ifindex: operstate} of ``indexes``, asked one by one in a single send.

        Unlike a dump, a get of one interface first lets the kernel finish a
        pending carrier change (linkwatch) of that interface, so a link that
        just came up reports UP rather than what it was a moment ago (Linux 6.8
        and later; a dump reports what linkwatch has got round to).
        """
        if not indexes:
            return {}
        by_seq = {}
        data = []
        for index in indexes:
            self.seq += 1
            by_seq[self.seq] = index
            data.append(nlmsg.message(RTM_GETLINK, NLM_F_REQUEST, self.seq, nlmsg.ifinfo(index)))
        self.sock.send(b"".join(data))
        states: dict[int, str | None] = {}
        while len(states) < len(by_seq):
            for msg_type, seq, message in self._receive():
                if seq not in by_seq:
                    continue
                if msg_type == NLMSG_ERROR:
                    raise RealizeError(f"reading interface {by_seq[seq]} failed: "
                                       f"{os.strerror(nlmsg.error_code(message))}")
                if msg_type == RTM_NEWLINK:
                    states[by_seq[seq]] = nlmsg.operstate(message)
        return states

    def altnames(self, index: int) -> list[str]:
        """The alternative names of interface ``index`` (e.g. testbed's tag on lo)."""
        links = self._get_links(0, index, f"reading interface {index}")
        return nlmsg.altnames(links[0]) if links else []

    def _get_links(self, flags: int, index: int, what: str) -> list[bytes]:
        """RTM_NEWLINK replies (whole messages) to a get-link request or dump."""
        self.seq += 1
        self.sock.send(nlmsg.message(RTM_GETLINK, NLM_F_REQUEST | flags, self.seq,
                                     nlmsg.ifinfo(index)))
        links: list[bytes] = []
        while True:
            for msg_type, seq, body in self._receive():
                if seq != self.seq:
                    continue
                if msg_type == NLMSG_DONE:
                    return links
                if msg_type == NLMSG_ERROR:
                    raise RealizeError(f"{what} failed: {os.strerror(nlmsg.error_code(body))}")
                if msg_type == RTM_NEWLINK:
                    links.append(body)
                    if not flags & NLM_F_DUMP:
                        return links

    def _receive(self) -> Iterator[tuple[int, int, bytes]]:
        """The messages of one datagram: (type, sequence number, whole message)."""
        # into a buffer made once: recv(n) allocates (and the kernel maps) n bytes a call
        size = self.sock.recv_into(self._buffer, 0, socket.MSG_TRUNC)
        if size > len(self._buffer):
            raise RealizeError(f"a netlink answer of {size} bytes does not fit the "
                               f"{len(self._buffer)}-byte buffer")
        data = self._buffer
        offset = 0
        while offset + _HEADER.size <= size:
            length, msg_type, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                return
            yield msg_type, seq, bytes(data[offset:offset + length])
            offset += (length + 3) & ~3
