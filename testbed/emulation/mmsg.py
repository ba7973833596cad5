"""Batched reads of small netlink messages: ``recvmmsg(2)`` through ctypes.

nfnetlink_queue sends one netlink datagram per queued packet (one skb each; the
kernel packs none together), so reading a busy lane with ``recv`` costs one
system call and one Python call per packet, and the last one of every drain an
exception. Python's socket module has no ``recvmmsg``; this reads up to
``slots`` messages per call into fixed slots of one buffer. A message longer
than its slot is cut (the link engine reads only the fixed header of an
id-only NFQUEUE message, well under a slot).
"""

from __future__ import annotations

import ctypes
import errno
import os

MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class BatchReader:
    """``read(fd)`` fills up to ``slots`` slots of ``stride`` bytes of ``buf``."""

    def __init__(self, slots: int = 64, stride: int = 512) -> None:
        self.slots, self.stride = slots, stride
        self.buf = ctypes.create_string_buffer(slots * stride)
        self._iov = (_Iovec * slots)()
        self._msgs = (_Mmsghdr * slots)()
        base = ctypes.addressof(self.buf)
        for i in range(slots):
            self._iov[i].base, self._iov[i].len = base + i * stride, stride
            self._msgs[i].hdr.iov = ctypes.pointer(self._iov[i])
            self._msgs[i].hdr.iovlen = 1
        libc = ctypes.CDLL(None, use_errno=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                   ctypes.c_void_p]
        self._recvmmsg.restype = ctypes.c_int
        self._addr = ctypes.addressof(self._msgs)

    def read(self, fd: int) -> int:
        """How many messages were read (0: none waits). OSError as ``recv`` raises it
        (ENOBUFS: the kernel dropped messages for want of room)."""
        n = self._recvmmsg(fd, self._addr, self.slots, MSG_DONTWAIT, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            return 0
        raise OSError(err, os.strerror(err))
