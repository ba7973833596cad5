"""The NFQUEUE pass of a woken arrival, measured once at the link engine's start.

A packet that arrives while the engine sleeps in ``select()`` reaches it only
after the kernel queued it, sent the netlink message and woke the engine: it
is stamped ``now - pass`` (engine.py, ``loop``). ``measure_pass`` measures that
pass with real packets on the engine's own machine: a forked child
``unshare``-s into a private, unnamed network namespace (it dies with the
child, even after kill -9: nothing to clean up), brings ``lo`` up, hooks one
NFQUEUE rule (mangle POSTROUTING, as a link's) on a UDP port of ``lo`` and
sends itself small datagrams ``spacing`` apart, each carrying its
``CLOCK_MONOTONIC`` send time; the engine binds that queue in the child's
namespace, waits in ``select()`` as its loop does and takes ``now - sent``
on each wake. ``pass_estimate`` makes the samples one figure (the mean of their
lower three quarters, at most ``PASS_MAX_NS``: never stamp a packet long before
it could have arrived).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import time

from testbed.emulation import nfqueue
from testbed.errors import RealizeError
from testbed.kernel.netns import CLONE_NEWNET, Namespaces

PASS_MAX_NS = 200_000     # the most a woken arrival is stamped before its wake-up
MIN_SAMPLES = 20          # fewer woken arrivals than that: no estimate
PORT = 9                  # discard: the datagrams are accepted to nobody
QUEUE = 0
_SENT = struct.Struct("=q")
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
RULES = ("*mangle\n-A POSTROUTING -o lo -p udp --dport {port} "
         "-j NFQUEUE --queue-num {queue}\nCOMMIT\n")


def pass_estimate(samples_ns: list[int]) -> int | None:
    """The woken-arrival pass from its samples: the mean of their lower three quarters
    (a mean is what makes the mean error zero, and the wakes are bimodal, so a median
    jumps between the modes from run to run; the top quarter is left out because a
    machine busy at start delays some wakes by hundreds of us, and an estimate too high
    would release every packet early), within 0 and ``PASS_MAX_NS``; None with too few
    samples."""
    if len(samples_ns) < MIN_SAMPLES:
        return None
    kept = sorted(samples_ns)[:len(samples_ns) * 3 // 4]
    return min(PASS_MAX_NS, max(0, sum(kept) // len(kept)))


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
                 timeout_s: float = 3.0) -> tuple[list[int], str | None]:
    """(wake samples in ns, None) or ([], why not): ``count`` datagrams ``spacing_ns``
    apart through an NFQUEUE rule in a private namespace (module doc)."""
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
            return [], why
        try:
            with Namespaces() as spaces, spaces.enter_process(pid):
                sock = nfqueue.open_queue(QUEUE, 1024, rcvbuf=1 << 20, copy_range=64)
        except (RealizeError, OSError) as exc:
            return [], f"no NFQUEUE socket in the calibration namespace: {exc}"
        with sock:
            os.write(go_w, b"g")
            return _collect(sock, count, deadline), None
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
    os.write(ready_w, b"r")
    os.read(go_r, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(count):
        sock.sendto(_SENT.pack(time.monotonic_ns()), ("127.0.0.1", PORT))
        time.sleep(spacing_ns / 1e9)
    os.read(go_r, 1)           # until the engine is done (it kills this child)
    return 0


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
