"""Private stand-in for ``testbed.realize.netns.enter`` until that lands.

``enter(name)`` moves the CURRENT THREAD into /run/netns/<name> with
setns(2) and back on exit. Sockets created inside keep that namespace;
subprocesses forked inside start in it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterator
from contextlib import contextmanager

from testbed.errors import RealizeError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


@contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the body with the current thread inside network namespace ``name``."""
    try:
        target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RealizeError(f"network namespace {name!r} does not exist "
                           f"(no {netns_path(name)}); create it first") from None
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _setns(target)
            except OSError as exc:
                raise RealizeError(f"cannot enter network namespace {name!r}: {exc}; "
                                   "run as root") from None
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        os.close(target)


def netns_inode(name: str) -> int:
    """Inode of the namespace ``name`` (compare with /proc/<pid>/ns/net)."""
    return os.stat(netns_path(name)).st_ino


def pids_in_netns(name: str) -> list[int]:
    """Pids of processes whose network namespace is ``name``."""
    try:
        ino = netns_inode(name)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                found.append(int(entry))
        except OSError:
            continue
    return found
