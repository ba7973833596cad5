"""The NFQUEUE pass of a woken arrival, measured once at the link engine's start.

A packet that arrives while the engine sleeps in ``select()`` reaches it only
after the kernel queued it, sent the netlink message and woke the engine, and
after its verdict it still has the rest of the way to go: an undelayed pass
through the engine adds all that to the packet's latency, and a configured
delay is the link's whole latency. ``measure_pass`` measures it with real
packets on the engine's own machine: a forked child ``unshare``-s into a
private, unnamed network namespace (it dies with the child, even after kill
-9: nothing to clean up), brings ``lo`` up, hooks one NFQUEUE rule (mangle
POSTROUTING, as a link's) on one UDP port of ``lo`` and sends itself small
datagrams ``spacing`` apart, each carrying its send time, one to a port beside
it (direct) and one through the queue; it takes each one's kernel receive
time (SO_TIMESTAMPNS). The engine binds that queue in the child's namespace,
waits in ``select()`` as its loop does, takes ``now - sent`` on each wake
(recorded) and accepts at once. ``pass_estimate``: queued minus direct (each
the mean of its lower three quarters), at most ``PASS_MAX_NS``. Arrivals that
wake the engine are stamped that long before the wake-up (engine.py, ``loop``).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field

from testbed.emulation import nfqueue
from testbed.errors import RealizeError
from testbed.kernel.netns import CLONE_NEWNET, Namespaces

PASS_MAX_NS = 200_000     # the most a woken arrival is stamped before its wake-up
MIN_SAMPLES = 20          # fewer woken arrivals than that: no estimate
PORT = 9                  # through the queue
DIRECT_PORT = 10          # beside it, not queued: the undelayed path's own latency
QUEUE = 0
_SENT = struct.Struct("=qq")   # CLOCK_MONOTONIC (the engine's), CLOCK_REALTIME (SO_TIMESTAMPNS)
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
RULES = ("*mangle\n-A POSTROUTING -o lo -p udp --dport {port} "
         "-j NFQUEUE --queue-num {queue}\nCOMMIT\n")


@dataclass
class PassSamples:
    """What one calibration measured, in ns (module doc)."""

    wake: list[int] = field(default_factory=list)     # send to the engine's wake-up
    direct: list[int] = field(default_factory=list)   # send to receive, not queued
    queued: list[int] = field(default_factory=list)   # the same through the queue


def low_mean(samples_ns: list[int]) -> int | None:
    """The mean of the lower three quarters (None with too few samples): a mean is what
    makes the mean error zero, and the wakes are bimodal, so a median jumps between the
    modes from run to run; the top quarter is left out because a machine busy at start
    delays some wakes by hundreds of us, and an estimate too high would release every
    packet early."""
    if len(samples_ns) < MIN_SAMPLES:
        return None
    kept = sorted(samples_ns)[:len(samples_ns) * 3 // 4]
    return sum(kept) // len(kept)


def pass_estimate(samples: PassSamples) -> int | None:
    """What an undelayed pass through the engine adds to a packet's latency (queued minus
    direct: the enqueue, the engine's wake-up, its verdict and the rest of the way),
    within 0 and ``PASS_MAX_NS``; None when either side has too few samples."""
    queued, direct = low_mean(samples.queued), low_mean(samples.direct)
    if queued is None or direct is None:
        return None
    return min(PASS_MAX_NS, max(0, queued - direct))


def woken_lead(packet_woke: bool, lead_ns: int, pass_ns: int | None) -> int:
    """How long before the wake-up what is read then is stamped: the measured pass when
    a packet woke the engine (and one was measured), else the timer's lead."""
    if packet_woke and pass_ns is not None:
        return pass_ns
    return lead_ns


def sent_time(payload: memoryview | bytes) -> int | None:
    """The send time a calibration datagram carries (after its IPv4 and UDP headers)."""
    if len(payload) < 1:
        return None
    start = (payload[0] & 0x0F) * 4 + 8
    if len(payload) < start + _SENT.size:
        return None
    return _SENT.unpack_from(payload, start)[0]


def measure_pass(count: int = 100, spacing_ns: int = 1_000_000,
                 timeout_s: float = 3.0) -> tuple[PassSamples, str | None]:
    """(samples, None) or (what there is, why not): ``count`` datagrams ``spacing_ns``
    apart through an NFQUEUE rule in a private namespace, each after one beside it
    (module doc)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child never returns into the engine's code, whatever happens
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            code = _child(ready_w, go_r, count, spacing_ns)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    deadline = time.monotonic() + timeout_s
    try:
        why = _await_ready(ready_r, deadline)
        if why is not None:
            return PassSamples(), why
        try:
            with Namespaces() as spaces, spaces.enter_process(pid):
                sock = nfqueue.open_queue(QUEUE, 1024, rcvbuf=1 << 20, copy_range=64)
        except (RealizeError, OSError) as exc:
            return PassSamples(), f"no NFQUEUE socket in the calibration namespace: {exc}"
        with sock:
            os.write(go_w, b"g")
            wake = _collect(sock, count, deadline)
        direct, queued = _await_report(ready_r, deadline)
        return PassSamples(wake, direct, queued), None
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(go_w)


def _await_ready(ready_r: int, deadline: float) -> str | None:
    """None once the child's namespace and rule are in place, else why not."""
    ready, _, _ = select.select([ready_r], [], [], max(0.0, deadline - time.monotonic()))
    if not ready:
        return "the calibration namespace was not ready in time"
    said = os.read(ready_r, 4096)
    if said == b"r":
        return None
    return said.decode(errors="replace") or "the calibration child died"


def _await_report(ready_r: int, deadline: float) -> tuple[list[int], list[int]]:
    """The child's receive latencies (direct, queued), or none if it did not finish."""
    said = b""
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([ready_r], [], [], left)[0]:
            break
        chunk = os.read(ready_r, 65536)
        if not chunk:
            report = json.loads(said or b"{}")
            return report.get("direct", []), report.get("queued", [])
        said += chunk
    return [], []


def _collect(sock: socket.socket, count: int, deadline: float) -> list[int]:
    """Wait as the engine's loop does; per wake the first datagram's ``now - sent``."""
    sock.setblocking(False)
    buf = bytearray(65536)
    samples: list[int] = []
    seen = 0
    while seen < count and time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.05)
        now = time.monotonic_ns()
        first = True
        while ready:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            pid = nfqueue.packet_id(buf)
            if pid is None:
                continue
            seen += 1
            sent = sent_time(nfqueue.packet_length_and_payload(buf, n)[1] or b"")
            if first and sent is not None:
                samples.append(now - sent)
            first = False
            sock.send(nfqueue.verdict(QUEUE, pid, nfqueue.NF_ACCEPT))
    return samples


def _child(ready_w: int, go_r: int, count: int, spacing_ns: int) -> int:
    """The sender, in its own namespace; says ``r`` (or why not) on ``ready_w``."""
    signal.set_wakeup_fd(-1)   # the engine's wake-up pipe is not the child's
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    try:
        # an ordinary sender: a real-time child would not yield its CPU to the engine
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        _private_loopback()
    except (OSError, subprocess.SubprocessError) as exc:
        os.write(ready_w, str(exc).encode()[:4000] or b"?")
        return 1
    receivers = {port: _receiver(port) for port in (DIRECT_PORT, PORT)}
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got: dict[int, list[int]] = {DIRECT_PORT: [], PORT: []}
    for _ in range(count):
        for port, receiver in receivers.items():
            sock.sendto(_SENT.pack(time.monotonic_ns(), time.time_ns()), ("127.0.0.1", port))
            latency = _receive_latency(receiver)
            if latency is not None:
                got[port].append(latency)
        time.sleep(spacing_ns / 1e9)
    os.write(ready_w, json.dumps({"direct": got[DIRECT_PORT], "queued": got[PORT]}).encode())
    os.close(ready_w)
    os.read(go_r, 1)           # until the engine is done (it kills this child)
    return 0


def _receiver(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.settimeout(0.2)
    sock.bind(("127.0.0.1", port))
    return sock


def _receive_latency(sock: socket.socket) -> int | None:
    """A datagram's kernel receive time minus the send time it carries (CLOCK_REALTIME)."""
    try:
        data, anc, _flags, _peer = sock.recvmsg(64, socket.CMSG_SPACE(16))
    except OSError:
        return None
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _SENT.size:
            sec, nsec = struct.unpack("=qq", raw[:16])
            return sec * 1_000_000_000 + nsec - _SENT.unpack_from(data)[1]
    return None


def _private_loopback() -> None:
    """Into a new network namespace, ``lo`` up, the NFQUEUE rule on it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))
    try:
        proc = subprocess.run(["iptables-restore", "-w", "--noflush"], capture_output=True,
                              text=True, timeout=10,
                              input=RULES.format(port=PORT, queue=QUEUE))
    except FileNotFoundError:
        raise OSError("iptables-restore is not installed") from None
    if proc.returncode != 0:
        raise OSError(f"iptables-restore: {proc.stderr.strip()}")
