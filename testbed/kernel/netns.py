"""Network namespaces by system call: create, remove, enter, run a process inside.

pyroute2's own namespace helpers fork a child per call; creating hundreds of
namespaces that way costs seconds. Here the calling thread ``unshare``-s and
``setns``-es back, the way ``ip netns add`` does, so a namespace costs about
a millisecond. Namespaces are bind mounts under /run/netns, like iproute2's.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
from pathlib import Path
from typing import Iterable, Iterator

from testbed.files import contained

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RDONLY = 1
MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str, target: str) -> None:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} {target}: {os.strerror(err)}")


def path_of(name: str) -> Path:
    return contained(NETNS_RUN_DIR, name, what="namespace name")


def _path_bytes(name: str) -> bytes:
    # what the system calls take; a Path per call costs more than the call (open, setns)
    return os.fsencode(NETNS_RUN_DIR) + b"/" + name.encode()


def exists(name: str) -> bool:
    return path_of(name).exists()


def list_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def inode(name: str) -> int | None:
    """The namespace's inode (what /proc/PID/ns/net links to), or None if gone."""
    try:
        return os.stat(path_of(name)).st_ino
    except OSError:
        return None


def _prepare_run_dir(libc: ctypes.CDLL) -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so mounts propagate."""
    NETNS_RUN_DIR.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"", bytes(NETNS_RUN_DIR), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    _check(libc.mount(bytes(NETNS_RUN_DIR), bytes(NETNS_RUN_DIR), b"none", MS_BIND | MS_REC, None),
           "bind-mount", str(NETNS_RUN_DIR))
    _check(libc.mount(b"", bytes(NETNS_RUN_DIR), b"none", MS_SHARED | MS_REC, None),
           "share", str(NETNS_RUN_DIR))


class Namespaces:
    """Creates and enters namespaces from the current thread; returns home after each step."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._prepared = False

    def close(self) -> None:
        if self._home >= 0:
            os.close(self._home)
            self._home = -1

    def __enter__(self) -> "Namespaces":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def go_home(self) -> None:
        """Return this thread to the namespace it was in when this object was made."""
        self._go_home()

    def _go_home(self) -> None:
        # failing to return would leave this thread in a namespace we may delete
        if self._libc.setns(self._home, CLONE_NEWNET) < 0:
            raise SystemExit("testbed: could not return to the initial network namespace")

    @contextlib.contextmanager
    def create(self, name: str) -> Iterator[None]:
        """Create namespace ``name``; the body runs inside it (to set it up), then home."""
        if not self._prepared:
            _prepare_run_dir(self._libc)
            self._prepared = True
        target = _path_bytes(name)
        fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        os.close(fd)
        try:
            _check(self._libc.unshare(CLONE_NEWNET), "unshare for", name)
            try:
                _check(self._libc.mount(b"/proc/thread-self/ns/net", target, b"none",
                                        MS_BIND, None), "bind-mount", name)
                yield
            finally:
                self._go_home()
        except BaseException:
            self._libc.umount2(target, MNT_DETACH)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            raise

    def enter(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Run the body with this thread inside namespace ``name``."""
        return self._enter(_path_bytes(name), name)

    def enter_process(self, pid: int) -> contextlib.AbstractContextManager[None]:
        """Run the body inside process ``pid``'s namespace (an unnamed one, too)."""
        return self._enter(f"/proc/{pid}/ns/net".encode(), f"of process {pid}")

    @contextlib.contextmanager
    def _enter(self, path: bytes, name: str) -> Iterator[None]:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(self._libc.setns(fd, CLONE_NEWNET), "setns into", name)
            try:
                yield
            finally:
                self._go_home()
        finally:
            os.close(fd)

    def remove(self, name: str) -> bool:
        """Unmount and unlink namespace ``name``. Returns False if it was not there."""
        target = path_of(name)
        if self._libc.umount2(bytes(target), MNT_DETACH) < 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"unmount {target}: {os.strerror(err)}")
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Run the body with the current thread inside namespace ``name``.

    Sockets opened in the body (netlink, sock_diag, TCP) stay in that namespace;
    subprocesses forked in the body start in it.
    """
    from testbed.errors import RealizeError
    if not exists(name):
        raise RealizeError(f"network namespace {name!r} does not exist (no {path_of(name)})")
    with Namespaces() as spaces, spaces.enter(name):
        yield


def processes_in(namespaces: Iterable[str]) -> list[int]:
    """PIDs of every process whose network namespace is one of ``namespaces``."""
    inodes = {ino for ino in (inode(n) for n in namespaces) if ino is not None}
    if not inodes:
        return []
    wanted = {f"net:[{ino}]" for ino in inodes}
    me = os.getpid()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/net") in wanted:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def discard(names: Iterable[str]) -> None:
    """Scratch namespaces (a benchmark's, a test fixture's): SIGKILL every process inside
    them, then remove them. Names that are not there are skipped."""
    names = [n for n in names if exists(n)]
    for pid in processes_in(names):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with Namespaces() as spaces:
        for name in names:
            spaces.remove(name)


def preexec_into(name: str, hosts_file: str | None = None):
    """A ``preexec_fn`` that moves a child into namespace ``name``, like ``ip netns exec``.

    The child also gets a private mount namespace with /sys remounted for the
    namespace (so tools see its interfaces) and, if given, ``hosts_file``
    bind-mounted on /etc/hosts so node names resolve. Everything the child
    needs is prepared here, in the parent: between fork and exec only system
    calls run (the parent may have other threads holding locks).
    """
    ns_path = bytes(path_of(name))
    hosts = hosts_file.encode() if hosts_file else None
    libc = _libc()
    setns, unshare, mount, umount2 = libc.setns, libc.unshare, libc.mount, libc.umount2
    open_, close, exit_ = os.open, os.close, os._exit

    def child() -> None:
        fd = open_(ns_path, os.O_RDONLY)
        if setns(fd, CLONE_NEWNET) < 0:
            exit_(126)
        close(fd)
        if unshare(CLONE_NEWNS) < 0:
            return
        mount(b"", b"/", b"none", MS_SLAVE | MS_REC, None)
        if umount2(b"/sys", MNT_DETACH) == 0:
            mount(ns_path, b"/sys", b"sysfs", 0, None)
        if hosts:
            mount(hosts, b"/etc/hosts", b"none", MS_BIND, None)

    return child
