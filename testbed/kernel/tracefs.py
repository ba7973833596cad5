"""tracefs: where it is mounted, what it offers, and trace instances testbed owns.

A trace instance (``instances/<name>``) is a ring buffer with its own events,
filters, clock and size; ``mkdir`` makes one and ``rmdir`` removes it (the
kernel refuses while a file in it is open). testbed's instances are named
``testbed.<instance>.<run>`` (``PREFIX``) and, like every other object it
makes, journalled *before* they are made: ``create`` appends the name to
``<journal_dir>/tracefs`` first, so after a ``kill -9`` ``owned_instances``
still finds them for ``down``/``clean``. An instance whose name lacks the
prefix is foreign and is never touched, journalled or not.

``probe`` says what is there and, for what is missing, why: no tracefs
mounted, not root, or an event this kernel does not have.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from testbed.kernel.ringbuffer import EventFormat, PageLayout, parse_format

PREFIX = "testbed."
# the tcp tracepoints testbed records (collect/tcpevents), as system/name
TCP_EVENTS = ("tcp/tcp_probe", "tcp/tcp_cong_state_set", "tcp/tcp_retransmit_skb",
              "tcp/tcp_rcvbuf_grow", "tcp/tcp_rcv_space_adjust", "tcp/tcp_send_reset",
              "tcp/tcp_receive_reset", "tcp/tcp_destroy_sock")
JOURNAL_FILE = "tracefs"
MOUNTS = Path("/proc/mounts")
DEFAULT_MOUNT = Path("/sys/kernel/tracing")
MOUNT_FIX = f"mount -t tracefs nodev {DEFAULT_MOUNT}"
MNT_DETACH = 2
STAT_KEYS = {"entries": "entries", "overrun": "overrun", "commit overrun": "commit_overrun",
             "bytes": "bytes", "dropped events": "dropped", "read events": "read"}


def mount_point(mounts: Path = MOUNTS) -> Path | None:
    """Where tracefs is mounted (the first tracefs line of /proc/mounts), or None."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "tracefs":
            return Path(parts[1].replace("\\040", " "))
    return None


def _libc_call(name: str, *args: object) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name} {DEFAULT_MOUNT}: {os.strerror(err)}")


def mount(path: Path = DEFAULT_MOUNT) -> None:
    """Mount tracefs at ``path`` (what ``MOUNT_FIX`` says to do by hand)."""
    _libc_call("mount", b"nodev", bytes(path), b"tracefs", 0, None)


def unmount(path: Path = DEFAULT_MOUNT) -> None:
    """Detach the tracefs mount at ``path`` (lazily: a reader still in it keeps its files)."""
    _libc_call("umount2", bytes(path), MNT_DETACH)


@dataclass
class Probe:
    """What tracing this host offers: the mount, and each wanted event with why not."""

    root: Path | None
    events: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fix: str = ""       # what a person can do about it, when there is one thing

    @property
    def usable(self) -> bool:
        return self.root is not None and any(self.events.values())

    def missing(self) -> list[str]:
        return [name for name, ok in self.events.items() if not ok]


def probe(events: tuple[str, ...], mounts: Path = MOUNTS) -> Probe:
    """Which of ``events`` (``system/name``) can be traced here, and why the others cannot."""
    root = mount_point(mounts)
    result = Probe(root, {e: False for e in events})
    if sys.byteorder != "little":
        result.problems.append("the ring-buffer decoder reads little-endian pages only")
        return result
    if root is None:
        result.problems.append("tracefs is not mounted")
        result.fix = MOUNT_FIX
        return result
    if not os.access(root / "instances", os.W_OK):
        result.root = None
        result.problems.append(f"{root}/instances is not writable (tracing needs root)")
        result.fix = "run testbed as root"
        return result
    clocks = _read(root / "trace_clock")
    if clocks is not None and "mono" not in clocks.replace("[", " ").replace("]", " ").split():
        result.problems.append("this kernel has no 'mono' trace clock (times would not line "
                               "up with time.monotonic())")
        return result
    for event in events:
        result.events[event] = (root / "events" / event / "format").exists()
        if not result.events[event]:
            result.problems.append(f"this kernel has no {event} tracepoint")
    return result


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def event_format(root: Path, event: str) -> EventFormat:
    return parse_format((root / "events" / event / "format").read_text())


def page_layout(root: Path) -> PageLayout:
    return PageLayout.from_header_page((root / "events" / "header_page").read_text())


def _journal(journal_dir: Path) -> Path:
    return journal_dir / JOURNAL_FILE


def journalled(journal_dir: Path) -> list[str]:
    """Names recorded in ``journal_dir``'s tracefs journal, in order, once each."""
    try:
        names = _journal(journal_dir).read_text().split()
    except FileNotFoundError:
        return []
    return list(dict.fromkeys(names))


def create(root: Path, journal_dir: Path, name: str) -> Path:
    """Journal ``name``, then make the instance. It must carry ``PREFIX`` and not exist."""
    if not name.startswith(PREFIX) or "/" in name or len(name) > 200:
        raise ValueError(f"trace instance name {name!r} must start with {PREFIX!r}, no '/'")
    journal_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(_journal(journal_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{name}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    path = root / "instances" / name
    path.mkdir()
    return path


def remove(root: Path, name: str) -> bool:
    """Remove our instance ``name`` if it is there (tracing stopped first). False if it
    was not there, or is still open (EBUSY: a live run's reader has it and removes it
    when it stops). A name without ``PREFIX`` is refused."""
    if not name.startswith(PREFIX) or "/" in name:
        raise ValueError(f"refusing to remove foreign trace instance {name!r}")
    path = root / "instances" / name
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path / "tracing_on", os.O_WRONLY | os.O_CLOEXEC)   # never creates
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    try:
        path.rmdir()
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        return False
    return True


def owned_instances(root: Path, prefix: str = PREFIX, journal_dir: Path | None = None) -> list[str]:
    """Our instances that exist: those named with ``prefix`` (which must itself start
    with ``PREFIX``), plus those in ``journal_dir``'s journal that carry ``PREFIX``."""
    if not prefix.startswith(PREFIX):
        raise ValueError(f"prefix {prefix!r} must start with {PREFIX!r}")
    try:
        present = set(os.listdir(root / "instances"))
    except FileNotFoundError:
        return []
    mine = {n for n in present if n.startswith(prefix)}
    if journal_dir is not None:
        mine |= {n for n in journalled(journal_dir) if n.startswith(PREFIX) and n in present}
    return sorted(mine)


def instance_name(testbed_instance: str, run_id: str) -> str:
    """The trace instance of one run of one testbed: ``testbed.<instance>.<run>``."""
    return f"{PREFIX}{testbed_instance}.{run_id}"


def remove_owned(testbed_instance: str | None, journal_dir: Path | None,
                 mounts: Path = MOUNTS) -> list[str]:
    """Remove the trace instances of ``testbed_instance`` (all of testbed's when None):
    those named for it and those in its journal. For ``down`` and ``clean``; nothing to do
    without tracefs. Returns the names removed."""
    root = mount_point(mounts)
    if root is None:
        return []
    prefix = PREFIX if testbed_instance is None else f"{PREFIX}{testbed_instance}."
    return [name for name in owned_instances(root, prefix, journal_dir) if remove(root, name)]


def cpus(instance: Path) -> list[int]:
    """The CPUs the instance has a buffer for."""
    return sorted(int(p.name[3:]) for p in (instance / "per_cpu").iterdir()
                  if p.name.startswith("cpu") and p.name[3:].isdigit())


def parse_stats(text: str) -> dict[str, int]:
    """A ``per_cpu/cpuN/stats`` file's counters (entries, overrun, dropped, ...)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        name = STAT_KEYS.get(key.strip())
        if name and value.strip().isdigit():
            out[name] = int(value.strip())
    return out


def cpu_stats(instance: Path) -> dict[int, dict[str, int]]:
    return {cpu: parse_stats((instance / "per_cpu" / f"cpu{cpu}" / "stats").read_text())
            for cpu in cpus(instance)}
