"""testbed.kernel.rtnl against a recording fake of the kernel's side of the socket.

A batch asks for one acknowledgement (its last request); the kernel answers
every failed request with an error anyway, and each error is matched to its
request by sequence number.
"""

from __future__ import annotations

import errno
import ipaddress
import struct

import pytest

from testbed.errors import RealizeError
from testbed.kernel import nlmsg, rtnl
from testbed.kernel.rtnl import Rtnl

ADDR = ipaddress.ip_interface("10.0.0.1/30")


class FakeKernel:
    """Answers each request of a send like the kernel: an error for a failing one,
    an acknowledgement only where asked, one datagram per answer."""

    def __init__(self, fail: dict[int, int] | None = None) -> None:
        self.fail = fail or {}          # request number (from 1) -> errno
        self.sent: list[tuple[int, int, int]] = []     # (type, flags, seq) of each request
        self.answers: list[bytes] = []

    def send(self, data: bytes) -> int:
        offset = 0
        while offset < len(data):
            length, msg_type, flags, seq, _ = nlmsg.HEADER.unpack_from(data, offset)
            self.sent.append((msg_type, flags, seq))
            code = self.fail.get(len(self.sent), 0)
            if code or flags & nlmsg.NLM_F_ACK:
                body = struct.pack("=i", -code) + data[offset:offset + nlmsg.HEADER.size]
                self.answers.append(nlmsg.message(nlmsg.NLMSG_ERROR, 0, seq, body))
            offset += (length + 3) & ~3
        return len(data)

    def recv_into(self, buffer: bytearray, nbytes: int = 0, flags: int = 0) -> int:
        answer = self.answers.pop(0)
        buffer[:len(answer)] = answer
        return len(answer)

    def close(self) -> None:
        pass


def fake_rtnl(fail: dict[int, int] | None = None) -> tuple[Rtnl, FakeKernel]:
    """An Rtnl talking to a FakeKernel that fails the requests in ``fail``."""
    r = Rtnl()
    r.sock.close()
    r.sock = kernel = FakeKernel(fail)
    return r, kernel


def test_a_batch_asks_for_one_acknowledgement():
    r, kernel = fake_rtnl()
    r.up(2, "up 2")
    r.address(2, ADDR, "address")
    r.up(3, "up 3")
    r.commit()
    assert [bool(flags & nlmsg.NLM_F_ACK) for _, flags, _ in kernel.sent] == [False, False, True]
    assert [seq for _, _, seq in kernel.sent] == [1, 2, 3]
    assert kernel.answers == []             # every answer was read


def test_an_error_mid_batch_names_its_request():
    r, _ = fake_rtnl(fail={2: errno.ENODEV})
    r.up(2, "setting eth0 up")
    r.up(9, "setting eth9 up")
    r.up(3, "setting eth1 up")
    with pytest.raises(RealizeError, match=r"setting eth9 up failed: .*\[ENODEV\]$"):
        r.commit()


def test_errors_allowed_for_a_request_are_not_failures():
    r, _ = fake_rtnl(fail={1: errno.EEXIST})
    r.address(2, ADDR, "address already there")      # addresses accept EEXIST
    r.up(2, "up")
    r.commit()
    r, _ = fake_rtnl(fail={1: errno.EEXIST, 3: errno.EPERM})
    r.address(2, ADDR, "address")
    r.up(2, "first up")
    r.up(3, "second up")
    with pytest.raises(RealizeError, match=r"second up failed: .*\[EPERM\]$"):
        r.commit()


def test_each_chunk_is_acknowledged_and_failures_are_counted(monkeypatch):
    monkeypatch.setattr(rtnl, "CHUNK", 2)
    r, kernel = fake_rtnl(fail={1: errno.EPERM, 2: errno.EPERM})
    for index in range(2, 7):
        r.up(index, f"up {index}")
    with pytest.raises(RealizeError, match=r"up 2 failed: .* \(and 1 more\)$"):
        r.commit()
    assert [bool(flags & nlmsg.NLM_F_ACK) for _, flags, _ in kernel.sent] == [False, True]
    r, kernel = fake_rtnl()
    for index in range(2, 7):
        r.up(index, f"up {index}")
    r.commit()
    assert [bool(flags & nlmsg.NLM_F_ACK) for _, flags, _ in kernel.sent] == \
        [False, True, False, True, True]
