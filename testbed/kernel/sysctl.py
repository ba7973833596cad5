"""Kernel parameters under /proc/sys: read, write, the congestion controls the
kernel offers, and ``NetSysctls`` for many keys of one namespace.

Keys are written with dots (``net.ipv4.ip_forward``); the file read is that of the
network namespace the calling thread is in.

/proc/sys/net shows the namespace of the thread that looks it up. Every
namespace has its own ``net`` entry under /proc/sys, all of them under one
name in one dentry hash chain, so each lookup of a path from /proc/sys walks
past the entries of the other namespaces: with 1000 namespaces an open costs
~0.1-0.2 ms more. ``NetSysctls`` looks ``net`` up once and opens each key
relative to it.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC_SYS = Path("/proc/sys")


def sysctl_path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def write_sysctl(key: str, value: str) -> None:
    sysctl_path(key).write_text(value)


def read_sysctl(key: str) -> str:
    return sysctl_path(key).read_text().strip()


def read_sysctl_or_none(key: str) -> str | None:
    """The value, or None where this kernel (or namespace) has no such key."""
    try:
        return read_sysctl(key)
    except OSError:
        return None


def available_ccs() -> list[str]:
    """The congestion controls this kernel offers now (empty if it cannot be read)."""
    value = read_sysctl_or_none("net.ipv4.tcp_available_congestion_control")
    return value.split() if value is not None else []


PROC_SYS_NET = "/proc/sys/net"


def relative_path(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``ipv4/ip_forward`` (below /proc/sys/net)."""
    if not key.startswith("net."):
        raise ValueError(f"not a network sysctl: {key}")
    return key[len("net."):].replace(".", "/")


class NetSysctls:
    """/proc/sys/net of the namespace the calling thread is in when this is made."""

    def __init__(self) -> None:
        self._dir = os.open(PROC_SYS_NET, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1

    def __enter__(self) -> "NetSysctls":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, key: str, value: str) -> None:
        fd = os.open(relative_path(key), os.O_WRONLY | os.O_CLOEXEC, dir_fd=self._dir)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def read(self, key: str) -> str:
        fd = os.open(relative_path(key), os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir)
        try:
            chunks = []
            while chunk := os.read(fd, 4096):
                chunks.append(chunk)
            return b"".join(chunks).decode().strip()
        finally:
            os.close(fd)
