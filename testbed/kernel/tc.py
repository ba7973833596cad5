"""Qdisc messages pyroute2 0.9.7 cannot build, sent on a raw rtnetlink socket.

pyroute2's tc plugins have no ``bfifo`` and no netem distribution tables or
64-bit delays, so these messages are built here byte for byte
(``qdisc_message`` is pure and unit-tested) and sent as RTM_NEWQDISC.
"""

from __future__ import annotations

import os
import socket
import struct

from testbed.errors import RealizeError
from testbed.kernel import nlmsg
from testbed.kernel.netns import enter

RTM_NEWQDISC = 36
NLMSG_ERROR = 2
# NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
CREATE_OR_REPLACE = 0x1 | 0x4 | 0x400 | 0x100

nla = nlmsg.attr   # one netlink attribute, padded to 4 bytes


def qdisc_message(ifindex: int, kind: str, handle: int, parent: int, options: bytes,
                  flags: int) -> bytes:
    """A complete RTM_NEWQDISC netlink message (pure)."""
    tcmsg = struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, handle, parent, 0)
    body = tcmsg + nlmsg.asciiz(1, kind) + nla(2, options)  # TCA_KIND, TCA_OPTIONS
    return nlmsg.message(RTM_NEWQDISC, flags, 1, body)


def send(netns: str, message: bytes, what: str, hint: str = "") -> None:
    """Send one request in ``netns``; RealizeError naming ``what`` (then ``hint``) if refused."""
    with enter(netns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        sock.send(message)
        reply = sock.recv(65536)
    finally:
        sock.close()
    _length, msg_type = struct.unpack_from("=IH", reply)
    if msg_type == NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", reply, 16)
        if code:
            raise RealizeError(f"{what} in {netns} refused: {os.strerror(-code)}{hint}")
