"""The NFQUEUE netlink protocol, as far as the link engine needs it.

pyroute2 0.9.7 has no nfnetlink_queue helper, so messages are built and
parsed here with ``struct``: binding a queue (copy mode META: the kernel
sends packet ids and metadata, never payloads), the queue length, the GSO
flag (super-packets are queued whole instead of being segmented first),
single and batch verdicts. Builders and parsers are pure; ``open_queue``
is the only function that touches a socket.

Deliberately absent: NFQA_CFG_F_FAIL_OPEN. With fail-open, packets that do
not fit the queue would be accepted at once and overtake the delay line.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from testbed.errors import RealizeError

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13

NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5

NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2
NFQA_CFG_F_GSO = 1 << 2

NF_DROP = 0
NF_ACCEPT = 1

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")
NFGEN_HDR = struct.Struct("=BBH")  # family, version, res_id (big endian, packed by hand)
NLA_HDR = struct.Struct("=HH")

_PACKET_TYPE = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
# offsets inside a NFQNL_MSG_PACKET message: nlmsghdr(16) + nfgenmsg(4) + nla hdr(4)
_FIRST_ATTR_TYPE_OFFSET = 16 + 4 + 2
_PACKET_ID_OFFSET = 16 + 4 + 4
_BE32 = struct.Struct(">I")


def _align(n: int) -> int:
    return (n + 3) & ~3


def nla(attr_type: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = NLA_HDR.pack(NLA_HDR.size + len(payload), attr_type) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def message(msg_type: int, queue_num: int, attrs: bytes, *, seq: int = 0,
            ack: bool = False, family: int = socket.AF_UNSPEC) -> bytes:
    """A nfnetlink message for the queue subsystem."""
    body = struct.pack("=BB", family, 0) + struct.pack(">H", queue_num) + attrs
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    full_type = (NFNL_SUBSYS_QUEUE << 8) | msg_type
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), full_type, flags, seq, 0) + body


def bind_messages(queue_num: int, maxlen: int, copy_range: int = 0) -> list[bytes]:
    """Config messages binding ``queue_num`` with GSO and ``maxlen``: META copy mode (ids
    only), or with ``copy_range`` the first that many bytes of each packet (a
    bottleneck needs lengths and ECN bits; marking needs the whole packet)."""
    cmd = nla(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0))
    mode = (copy_range, NFQNL_COPY_PACKET) if copy_range else (0, NFQNL_COPY_META)
    params = nla(NFQA_CFG_PARAMS, struct.pack(">IB", *mode))
    length = nla(NFQA_CFG_QUEUE_MAXLEN, struct.pack(">I", maxlen))
    flags = (nla(NFQA_CFG_FLAGS, struct.pack(">I", NFQA_CFG_F_GSO))
             + nla(NFQA_CFG_MASK, struct.pack(">I", NFQA_CFG_F_GSO)))
    return [
        message(NFQNL_MSG_CONFIG, queue_num, cmd, seq=1, ack=True),
        message(NFQNL_MSG_CONFIG, queue_num, params + length, seq=2, ack=True),
        message(NFQNL_MSG_CONFIG, queue_num, flags, seq=3, ack=True),
    ]


def verdict(queue_num: int, packet_id: int, verdict_code: int) -> bytes:
    """Verdict for one packet."""
    return message(NFQNL_MSG_VERDICT, queue_num,
                   nla(NFQA_VERDICT_HDR, struct.pack(">II", verdict_code, packet_id)))


def verdict_with_payload(queue_num: int, packet_id: int, payload: bytes) -> bytes:
    """ACCEPT one packet, replacing it with ``payload`` (the whole packet: a shorter one
    would trim it)."""
    return message(NFQNL_MSG_VERDICT, queue_num,
                   nla(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id))
                   + nla(NFQA_PAYLOAD, payload))


def packet_length_and_payload(buf: bytes | bytearray | memoryview,
                              n: int) -> tuple[int, memoryview | None]:
    """(the packet's full length, the copied bytes) of a NFQNL_MSG_PACKET message of ``n``
    bytes bound with a copy range: NFQA_CAP_LEN when truncated, else the payload's."""
    view = memoryview(buf)[:n]
    offset = 16 + 4
    payload, cap_len = None, None
    while offset + 4 <= n:
        length, attr_type = NLA_HDR.unpack_from(view, offset)
        if length < 4:
            break
        attr_type &= 0x7FFF
        if attr_type == NFQA_PAYLOAD:
            payload = view[offset + 4:offset + length]
        elif attr_type == NFQA_CAP_LEN:
            cap_len = _BE32.unpack_from(view, offset + 4)[0]
        offset += _align(length)
    size = cap_len if cap_len is not None else (len(payload) if payload is not None else 0)
    return size, payload


def batch_verdict(queue_num: int, up_to_id: int, verdict_code: int = NF_ACCEPT) -> bytes:
    """Verdict for every queued packet whose id is <= ``up_to_id``."""
    return message(NFQNL_MSG_VERDICT_BATCH, queue_num,
                   nla(NFQA_VERDICT_HDR, struct.pack(">II", verdict_code, up_to_id)))


def packet_id(buf: bytes | bytearray | memoryview, offset: int = 0) -> int | None:
    """The packet id of a NFQNL_MSG_PACKET message at ``offset``, else None.

    The kernel always puts NFQA_PACKET_HDR first, so this reads fixed offsets.
    """
    if len(buf) - offset < _PACKET_ID_OFFSET + 4:
        return None
    _length, msg_type = struct.unpack_from("=IH", buf, offset)
    if msg_type != _PACKET_TYPE:
        return None
    (attr_type,) = struct.unpack_from("=H", buf, offset + _FIRST_ATTR_TYPE_OFFSET)
    if attr_type & 0x7FFF != NFQA_PACKET_HDR:
        return None
    return _BE32.unpack_from(buf, offset + _PACKET_ID_OFFSET)[0]


_HEAD = struct.Struct("=4xH16xH")   # nlmsg_type; the first attribute's type


def packet_ids(buf: bytes | bytearray | memoryview, count: int,
               stride: int) -> tuple[list[int], list[int]]:
    """Of ``count`` messages ``stride`` bytes apart in ``buf``: the ids of the
    NFQNL_MSG_PACKET ones in order, and the offsets of the others (errors, acks)."""
    ids, others = [], []
    head, be32 = _HEAD.unpack_from, _BE32.unpack_from
    for offset in range(0, count * stride, stride):
        msg_type, attr_type = head(buf, offset)
        if msg_type == _PACKET_TYPE and attr_type & 0x7FFF == NFQA_PACKET_HDR:
            ids.append(be32(buf, offset + _PACKET_ID_OFFSET)[0])
        else:
            others.append(offset)
    return ids, others


def ack_error(buf: bytes) -> int | None:
    """errno carried by an NLMSG_ERROR reply (0 for a plain ACK), None if not one."""
    if len(buf) < NLMSG_HDR.size + 4:
        return None
    _length, msg_type, _flags, _seq, _pid = NLMSG_HDR.unpack_from(buf, 0)
    if msg_type != NLMSG_ERROR:
        return None
    (code,) = struct.unpack_from("=i", buf, NLMSG_HDR.size)
    return -code


@dataclass(frozen=True)
class QueueStatus:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue_num: int
    portid: int
    queue_total: int
    copy_mode: int
    copy_range: int
    queue_dropped: int
    user_dropped: int
    id_sequence: int


def parse_proc(text: str) -> dict[int, QueueStatus]:
    """Parse /proc/net/netfilter/nfnetlink_queue (bound queues of one namespace)."""
    out = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 8:
            continue
        nums = [int(c) for c in cols[:8]]
        out[nums[0]] = QueueStatus(*nums)
    return out


def open_queue(queue_num: int, maxlen: int, rcvbuf: int, copy_range: int = 0) -> socket.socket:
    """Bind ``queue_num`` in the current network namespace and return the socket.

    Raises RealizeError when the kernel refuses (e.g. another process has
    bound the same queue, or nfnetlink_queue is missing).
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, 0))
        for msg in bind_messages(queue_num, maxlen, copy_range):
            sock.send(msg)
            reply = sock.recv(65536)
            code = ack_error(reply)
            if code:
                raise RealizeError(
                    f"binding NFQUEUE {queue_num} failed: {errno.errorcode.get(code, code)} "
                    f"({os.strerror(code)}); is another link engine bound "
                    "to this queue, or is nfnetlink_queue missing from the kernel?")
        return sock
    except BaseException:
        sock.close()
        raise
