"""Kernel TCP events of a run's flows, from the tcp tracepoints, beside the tcp_info samples.

Where ``tcpinfo`` samples each socket every few milliseconds, this records
every change as it happens: ``tcp:tcp_probe`` on every incoming segment (so
every ACK a sender gets: cwnd, ssthresh, windows, srtt, snd_nxt/snd_una),
``tcp:tcp_cong_state_set`` on each congestion-state change (open, disorder,
cwr, recovery, loss), ``tcp:tcp_retransmit_skb``, the receive-buffer
autotuning events and resets.

``TcpEventsCollector`` makes a trace instance of its own (``kernel/tracefs``:
journalled before ``mkdir``, removed by ``stop``), with the ``mono`` clock so
that time stamps are ``time.monotonic()`` values, a buffer sized by
``buffer_kb`` and, on every event that has ``sport``/``dport`` fields, a
kernel-side filter on the flows' ports: other sockets on the host cost a
filter test, nothing more. A thread copies the binary per-CPU ring-buffer
pages (``per_cpu/cpuN/trace_pipe_raw``) into a spool file as they come,
untouched; ``tcpevents_parse`` turns the file into ``tcp_events.csv`` rows and
per-flow counts after the run. The spool starts with the event formats it was
recorded with, so it decodes on its own. Lost events are counted twice over:
the kernel's per-CPU ``overrun``/``dropped events`` (``TraceStats``) and the
pages' own missed-events marks (``tcpevents_parse.Decoded.lost``).
"""

from __future__ import annotations

import json
import os
import select
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from testbed.errors import PreflightError
from testbed.kernel import tracefs
from testbed.kernel.ringbuffer import COMMIT_MASK, MISSED_STORED, EventFormat, PageLayout

EVENTS = tracefs.TCP_EVENTS
SPOOL_MAGIC = b"TBTRACE1"
SPOOL_RECORD = struct.Struct("=HI")  # cpu, length of the page bytes that follow
SPOOL_HEADER_LENGTH = struct.Struct("=I")
RECORD_BYTES = 144                  # a tcp_probe record with its headers, the largest common one


@dataclass(frozen=True)
class SpoolHeader:
    """What a spool says about itself: how its pages and records are laid out, and which
    ports the kernel filtered on (and for which events it could not)."""

    layout: PageLayout
    formats: tuple[EventFormat, ...]
    ports: frozenset[int]
    unfiltered: frozenset[str]          # event names without a kernel-side port filter
    instance: str = ""
    version: int = 1

    def to_json(self) -> bytes:
        return json.dumps({
            "version": self.version, "clock": "mono", "instance": self.instance,
            "ports": sorted(self.ports), "unfiltered": sorted(self.unfiltered),
            "layout": [self.layout.timestamp_offset, self.layout.commit_offset,
                       self.layout.commit_size, self.layout.data_offset],
            "formats": [f.as_dict() for f in self.formats]}).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> SpoolHeader:
        """ValueError, saying what, if ``blob`` is not a header this version can read."""
        try:
            data = json.loads(blob)
            if data.get("version") != 1:
                raise ValueError(f"version {data.get('version')!r}, this testbed reads 1")
            if len(data["layout"]) != 4:
                raise ValueError("the page layout needs 4 numbers")
            return cls(PageLayout(*(int(x) for x in data["layout"])),
                       tuple(EventFormat.from_dict(f) for f in data["formats"]),
                       frozenset(int(p) for p in data["ports"]),
                       frozenset(str(e) for e in data["unfiltered"]),
                       str(data.get("instance", "")))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"the tcp events spool's header is damaged: {exc}") from None


def buffer_kb(events_per_s: float, duration_s: float, *, cpus: int | None = None,
              cap_total_kb: int = 262144, floor_kb: int = 512) -> int:
    """Per-CPU ring-buffer size for ``events_per_s`` over ``duration_s``, as if no page
    were read during the run (the reader can be starved) and every event landed on one
    CPU (ACKs are processed where their softirq runs); all CPUs' buffers together are
    capped at ``cap_total_kb``."""
    want = events_per_s * duration_s * RECORD_BYTES / 1024
    cap = cap_total_kb // max(1, cpus or os.cpu_count() or 1)
    return int(max(floor_kb, min(cap, want)))


def port_filter(ports: frozenset[int] | set[int]) -> str:
    """An ftrace filter accepting events whose ``sport`` or ``dport`` is in ``ports``
    (contiguous ports as one range test)."""
    if not ports:
        raise ValueError("port_filter needs at least one port")
    ranges: list[list[int]] = []
    for p in sorted(ports):
        if not 0 < p < 65536:
            raise ValueError(f"port {p} out of range")
        if ranges and p == ranges[-1][1] + 1:
            ranges[-1][1] = p
        else:
            ranges.append([p, p])
    tests = []
    for side in ("sport", "dport"):
        for lo, hi in ranges:
            tests.append(f"{side} == {lo}" if lo == hi else f"({side} >= {lo} && {side} <= {hi})")
    return " || ".join(tests)


@dataclass
class TraceStats:
    """What the trace instance and the reader thread saw."""

    buffer_kb: int
    per_cpu: dict[int, dict[str, int]] = field(default_factory=dict)
    pages: int = 0
    spool_bytes: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    unfiltered: list[str] = field(default_factory=list)   # events without a kernel port filter

    def total(self, key: str) -> int:
        return sum(c.get(key, 0) for c in self.per_cpu.values())

    def as_dict(self) -> dict[str, Any]:
        return {"buffer_kb": self.buffer_kb, "pages": self.pages, "spool_bytes": self.spool_bytes,
                "overrun": self.total("overrun"), "dropped": self.total("dropped"),
                "commit_overrun": self.total("commit_overrun"), "read": self.total("read"),
                "cpu_seconds": self.cpu_seconds, "wall_seconds": self.wall_seconds,
                "unfiltered_events": self.unfiltered,
                "per_cpu": {str(k): v for k, v in self.per_cpu.items()}}


@dataclass
class TcpEventsCollector:
    """Records ``events`` of sockets with a port in ``ports`` into ``spool`` between
    ``start`` and ``stop``, in a trace instance ``name`` journalled in ``journal_dir``."""

    journal_dir: Path
    name: str
    ports: frozenset[int]
    spool: Path
    buffer_kb: int = 4096
    events: tuple[str, ...] = EVENTS
    poll_interval: float = 0.1
    root: Path | None = None
    mounts: Path = tracefs.MOUNTS       # where to look for the tracefs mount
    stats: TraceStats = field(init=False)
    missing: list[str] = field(init=False, default_factory=list)   # wanted, not in this kernel
    error: BaseException | None = field(init=False, default=None)
    _instance: Path | None = field(init=False, default=None)
    _fds: list[tuple[int, int]] = field(init=False, default_factory=list)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _thread: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.stats = TraceStats(self.buffer_kb)

    def start(self) -> None:
        """Make and arm the instance and start the reader; on any failure nothing is left."""
        found = tracefs.probe(self.events, self.mounts)
        if not found.usable:
            fix = f" (fix: {found.fix})" if found.fix else ""
            raise PreflightError("tcp events cannot be traced: " + "; ".join(found.problems) + fix)
        self.root = self.root or found.root
        assert self.root is not None
        self.missing = found.missing()
        formats = [tracefs.event_format(self.root, e) for e in self.events if found.events[e]]
        layout = tracefs.page_layout(self.root)
        self._instance = tracefs.create(self.root, self.journal_dir, self.name)
        try:
            self._configure(formats)
            self._open(layout, formats)
            self._thread = threading.Thread(target=self._run, args=(layout,),
                                            name="tcpevents-reader", daemon=True)
            self._thread.start()
            (self._instance / "tracing_on").write_text("1")
        except BaseException:
            self._release()
            raise

    def _configure(self, formats: list[EventFormat]) -> None:
        inst = self._instance
        assert inst is not None
        (inst / "tracing_on").write_text("0")
        (inst / "trace_clock").write_text("mono")
        (inst / "buffer_size_kb").write_text(str(self.buffer_kb))
        (inst / "options" / "overwrite").write_text("0")   # full: drop new, count 'dropped'
        filt = port_filter(self.ports)
        for fmt in formats:
            event = inst / "events" / "tcp" / fmt.name
            if {"sport", "dport"} <= fmt.fields.keys():
                (event / "filter").write_text(filt)
            else:
                self.stats.unfiltered.append(fmt.name)
            (event / "enable").write_text("1")

    def _open(self, layout: PageLayout, formats: list[EventFormat]) -> None:
        inst = self._instance
        assert inst is not None
        for cpu in tracefs.cpus(inst):
            path = inst / "per_cpu" / f"cpu{cpu}" / "trace_pipe_raw"
            self._fds.append((cpu, os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)))
        blob = SpoolHeader(layout, tuple(formats), self.ports, frozenset(self.stats.unfiltered),
                           self.name).to_json()
        with open(self.spool, "wb") as out:
            out.write(SPOOL_MAGIC + SPOOL_HEADER_LENGTH.pack(len(blob)) + blob)

    def stop(self) -> TraceStats:
        """Stop tracing, read what is left, count losses, remove the instance."""
        if self._instance is None:
            return self.stats
        try:
            (self._instance / "tracing_on").write_text("0")
            self._stop.set()
            if self._thread is not None:
                self._thread.join(10.0)
            self.stats.per_cpu = tracefs.cpu_stats(self._instance)
        finally:
            self._release()
        return self.stats

    def _release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(10.0)
        for _, fd in self._fds:
            os.close(fd)
        self._fds = []
        if self._instance is not None and self.root is not None:
            tracefs.remove(self.root, self.name)
        self._instance = None

    def _run(self, layout: PageLayout) -> None:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        try:
            with open(self.spool, "ab", buffering=1 << 20) as out:
                self._loop(layout, out.write)
        except BaseException as exc:  # reported by the caller through .error, not swallowed
            self.error = exc
        finally:
            self.stats.cpu_seconds = time.thread_time() - cpu0
            self.stats.wall_seconds = time.monotonic() - wall0

    def _loop(self, layout: PageLayout, write: Callable[[bytes], Any]) -> None:
        """Wait for data (or the poll interval), copy every readable page out, repeat;
        one last drain after ``stop`` turned tracing off."""
        poller = select.poll()
        for _, fd in self._fds:
            poller.register(fd, select.POLLIN)
        size = _subbuf_bytes(self._instance)
        while True:
            stopping = self._stop.is_set()
            for cpu, fd in self._fds:
                self._drain(cpu, fd, size, layout, write)
            if stopping:
                return
            poller.poll(self.poll_interval * 1000)

    def _drain(self, cpu: int, fd: int, size: int, layout: PageLayout,
               write: Callable[[bytes], Any]) -> None:
        lo, hi = layout.commit_offset, layout.commit_offset + layout.commit_size
        while True:
            try:
                page = os.read(fd, size)
            except BlockingIOError:
                return
            if not page:
                return
            commit = int.from_bytes(page[lo:hi], "little")
            used = layout.data_offset + (commit & COMMIT_MASK) + \
                (layout.commit_size if commit & MISSED_STORED else 0)
            write(SPOOL_RECORD.pack(cpu, min(used, len(page))))
            write(page[:used])
            self.stats.pages += 1
            self.stats.spool_bytes += SPOOL_RECORD.size + min(used, len(page))


def _subbuf_bytes(instance: Path | None) -> int:
    """The instance's sub-buffer (page) size: ``buffer_subbuf_size_kb``, else a page."""
    if instance is not None:
        try:
            return int((instance / "buffer_subbuf_size_kb").read_text()) * 1024
        except (OSError, ValueError):
            pass    # older kernels: sub-buffers are pages
    return os.sysconf("SC_PAGE_SIZE")
