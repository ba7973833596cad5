"""The link engine: ``python -m testbed.emulation.engine``, every delay line of a testbed.

One process serves every emulated direction of every namespace of one
testbed: it holds one NFQUEUE socket per direction (made after ``setns``
into that direction's namespace, where a netlink socket stays bound; the
engine itself lives in one of the testbed's namespaces) and one timer heap
over all of them. Per direction a ``DelayLine`` decides what happens to each
packet id; held packets leave in arrival order with batched verdicts.

Timing (DESIGN.md, "A one-process delay engine"):

- ``select()`` on the epoll fd takes a microsecond timeout (epoll's own rounds
  up to whole milliseconds) and ``PR_SET_TIMERSLACK`` 1 ns keeps it tight;
- wake-up lead compensation: the engine wakes ``lead`` before a packet falls
  due, ``lead`` following a low quantile of the observed timer lateness;
- causal stamping: a verdict ``send()`` pushes the packet through the next
  router and into the next hop's queue before ``send()`` returns, so after
  every send the sockets are polled at once and what arrived is stamped with
  that send's start time, not with the time the engine got round to it (the
  veth crossing is thus inside the next link's delay, not added to it);
- woken arrivals: a packet that wakes the engine from ``select()`` is stamped
  what an undelayed NFQUEUE pass adds to a packet's latency before the wake-up
  (``pass_ns``, measured at start with real packets in a private namespace:
  ``passcal.py``; where that cannot be done, the timer's ``lead``, and the
  status says why);
- release compensation: a configured delay is the link's whole one-way latency,
  so every packet's delay is shortened by the engine's measured mean release
  lateness (``compensation``, following each release; never below zero: a
  packet never leaves before it arrived). The mean error per pass is then
  about zero, and single packets leave up to a few tens of us early or late.

A lane with ``aqm: fq_codel`` (``fqcodel.py``) works differently: its packets
wait in the scheduler's per-flow queues, each dequeue runs when the link is
free (the lane's timer entry: the earlier of that and its delay line's next
due), and since packets then leave out of arrival order every one gets its
own verdict (a batch verdict would accept every lower id with it).

Control (``--control DIR``): ``engine.json`` (generation and lanes: namespace,
queue, config) is read at start and on SIGHUP; after each (re)load the engine
writes ``engine.status`` (pid, generation, lanes with their config and
counters, the measured release lateness) atomically; SIGUSR1 rewrites the
status with fresh counters (``stats_seq`` + 1). A datagram on the query socket
``engine.sock`` beside the status is answered, to its sender, with the
bottleneck queues as of now (a run samples them every 10-100 ms: no file is
written, so no filesystem journal can stall the loop, and a full receiver
loses that answer instead of blocking the engine). SIGTERM/SIGINT release every
held packet and exit. There is no bypass anywhere: while no engine listens,
the kernel drops what the NFQUEUE rules hand over, so the control side
supervises the engine (``enginectl.check_alive``).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from testbed.emulation import nfqueue, passcal
from testbed.emulation.mmsg import BatchReader
from testbed.emulation.bottleneck import DROP as QUEUE_DROP, MARK, Bottleneck, is_ect, mark_ce
from testbed.emulation.delayline import ACCEPT_NOW, DROP, HOLD, DelayConfig, DelayLine
from testbed.emulation.fqcodel import FqCoDel, flow_key
from testbed.errors import RealizeError
from testbed.kernel.netns import Namespaces

_DRAIN_MAX = 512
_LEAD_MAX_NS = 200_000   # a stall never makes packets leave more than this early
_LEAD_SHIFT = 5
MAXLEN = 65536
RCVBUF = 8 * 1024 * 1024
_LATE_SAMPLES = 4096     # release lateness kept for the status (a ring)
_VERDICT_CHUNK = 32768   # bytes of per-packet verdicts sent at once (under the socket's sndbuf)
_COMP_MAX_NS = 200_000   # the most the compensation takes off a packet's delay
_COMP_SHIFT = 6          # it follows the mean release lateness with weight 1/64


def lane_key(netns: str, queue: int) -> str:
    """How a lane is named in the control files: ``<netns>/<queue>``."""
    return f"{netns}/{queue}"


@dataclass
class Lane:
    """One emulated direction: its queue's socket and delay line, and counters."""

    netns: str
    queue: int
    sock: socket.socket
    line: DelayLine
    armed: bool = False            # has an entry in the timer heap
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("packets", "held", "dropped", "reordered", "released", "enobufs"), 0))
    bottleneck: Bottleneck | FqCoDel | None = None   # with an aqm: the engine is the bottleneck
    marked: dict[int, bytes] = field(default_factory=dict)   # CE-marked payloads by id
    fq: FqCoDel | None = None      # aqm fq_codel: the bottleneck, holding the packets
    fq_due: int | None = None      # its live timer entry (later/other entries are stale)
    payloads: dict[int, bytes] = field(default_factory=dict)  # ECT packets the fq holds


def copy_range(config: DelayConfig) -> int:
    """How much of each packet a lane reads: nothing (ids), headers (length, ECN bits) or,
    to hand back CE-marked packets, everything."""
    if config.aqm is None:
        return 0
    return 65535 if config.ecn else 64


def query_path(status: str) -> str:
    """The engine's query socket: ``engine.sock`` beside its status file."""
    return os.path.join(os.path.dirname(status), "engine.sock")


def open_query(path: str) -> socket.socket | None:
    """The query socket (a unix datagram socket: it works across network namespaces), or
    None (said on stderr) if it cannot be bound: the engine serves its lanes without."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(path)
    except OSError as exc:
        print(f"engine: no query socket at {path}: {exc}", file=sys.stderr)
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def read_control(path: str) -> tuple[int, dict[str, DelayConfig]]:
    with open(path) as f:
        data = json.load(f)
    return int(data["generation"]), {k: DelayConfig.from_dict(v)
                                     for k, v in data["lanes"].items()}


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(data))   # one C-encoded string: the engine stalls while it writes
    os.replace(tmp, path)


class Engine:
    """The lanes, the timer heap and the loop."""

    def __init__(self, control: str, status: str, seed: int | None, realtime: bool) -> None:
        self.control, self.status_path = control, status
        self.rng = random.Random(seed)
        self.realtime = realtime
        self.lanes: dict[int, Lane] = {}        # by socket fd
        self.by_key: dict[str, Lane] = {}
        self.heap: list[tuple[int, int]] = []   # (due ns, fd)
        self.epoll = select.epoll()
        self.generation = 0
        self.stats_seq = 0
        self.lead = 0
        self.compensation = 0                    # ns taken off every delay (module doc)
        self.late: list[int] = []                # release error vs the configured delay
        self.calibration: dict | None = None
        self.pass_ns: int | None = None          # the woken-arrival pass (passcal.py)
        self.errors: dict[str, str] = {}         # lanes that could not be opened
        self.spaces = Namespaces()
        self.reader = BatchReader()

    # -- control ------------------------------------------------------------
    def load(self) -> None:
        """Make the lanes what the control file says: open, reconfigure, close."""
        generation, wanted = read_control(self.control)
        for key in [k for k in self.by_key if k not in wanted]:
            self._close(self.by_key.pop(key))
        self.errors = {}
        for key, config in wanted.items():
            lane = self.by_key.get(key)
            if lane is None:
                try:
                    self.by_key[key] = self._open(key, config)
                except (RealizeError, OSError) as exc:
                    # one lane that cannot bind must not take every other link down
                    self.errors[key] = str(exc)
            elif copy_range(lane.line.config) != copy_range(config) \
                    or _is_fq(lane.line.config) != _is_fq(config):
                self._close(self.by_key.pop(key))     # another copy or verdict mode: anew
                self.by_key[key] = self._open(key, config)
            elif lane.line.config != config:
                wanted = config.bottleneck()
                if lane.fq is not None and wanted is not None:
                    lane.fq.reconfigure(wanted)       # its held packets stay queued
                elif lane.line.config.bottleneck() != wanted:
                    lane.bottleneck = _bottleneck(config, self.rng)
                lane.line.configure(config)
        self.generation = generation
        self.write_status()

    def _open(self, key: str, config: DelayConfig) -> Lane:
        netns, _, queue = key.rpartition("/")
        with self.spaces.enter(netns):
            sock = nfqueue.open_queue(int(queue), MAXLEN, rcvbuf=RCVBUF,
                                      copy_range=copy_range(config))
        sock.setblocking(False)
        bottleneck = _bottleneck(config, self.rng)
        lane = Lane(netns, int(queue), sock, DelayLine(config, self.rng), bottleneck=bottleneck,
                    fq=bottleneck if isinstance(bottleneck, FqCoDel) else None)
        self.lanes[sock.fileno()] = lane
        self.epoll.register(sock.fileno(), select.EPOLLIN)
        return lane

    def _close(self, lane: Lane) -> None:
        last = _last_held(lane)
        if last is not None:
            try:
                lane.sock.send(nfqueue.batch_verdict(lane.queue, last))
            except OSError:   # its namespace is gone: so are the packets
                pass
        fd = lane.sock.fileno()
        self.epoll.unregister(fd)
        del self.lanes[fd]
        lane.sock.close()

    def write_status(self) -> None:
        now = time.monotonic_ns()
        self.stats_seq += 1
        write_json(self.status_path, {
            "pid": os.getpid(), "generation": self.generation, "stats_seq": self.stats_seq,
            "realtime": self.realtime, "lead_ns": self.lead, "calibration": self.calibration,
            "compensation_us": round(self.compensation / 1e3, 1),
            "release_late_us": summary_us(self.late), "errors": self.errors,
            "lanes": {key: {"config": lane.line.config.to_dict(), "held": len(lane.line),
                            "portid": lane.sock.getsockname()[0], **lane.counters,
                            "bottleneck": None if lane.bottleneck is None
                            else lane.bottleneck.status(now)}
                      for key, lane in self.by_key.items()}})

    def queues(self) -> dict:
        """The bottleneck queues, as of now (their ``status(now)``), each with its aqm."""
        now = time.monotonic_ns()
        return {key: {"aqm": lane.line.config.aqm, **lane.bottleneck.status(now)}
                for key, lane in self.by_key.items() if lane.bottleneck is not None}

    def answer_queries(self, query: socket.socket) -> None:
        """Each waiting query (a request id) gets the queues back, with that id."""
        for _ in range(16):
            try:
                request, sender = query.recvfrom(64)
            except BlockingIOError:
                return
            reply = json.dumps({"pid": os.getpid(), "request": request.decode(errors="replace"),
                                "queues": self.queues()}).encode()
            try:
                query.sendto(reply, sender)
            except OSError:     # the asker is gone or its buffer is full: that answer is lost
                pass

    def shutdown(self) -> None:
        for lane in list(self.by_key.values()):
            self._close(lane)
        self.by_key.clear()

    # -- packets ------------------------------------------------------------
    def drain(self, lane: Lane, stamp: int, buf: bytearray) -> None:
        """Read what waits on ``lane``'s socket; every packet arrived at ``stamp``."""
        if lane.bottleneck is None:
            self.drain_ids(lane, stamp)
            return
        recv_into, arrive, counters = lane.sock.recv_into, lane.line.arrive, lane.counters
        for _ in range(_DRAIN_MAX):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: the kernel dropped messages
                    counters["enobufs"] += 1
                    continue
                raise
            pid = nfqueue.packet_id(buf)
            if pid is None:
                if n >= 20 and nfqueue.ack_error(bytes(buf[:n])):
                    print(f"engine: kernel error on {lane.netns} queue {lane.queue}",
                          file=sys.stderr)
                continue
            counters["packets"] += 1
            at = stamp
            if lane.bottleneck is not None:
                at = self.enqueue(lane, pid, buf, n, stamp)
                if at is None:
                    continue
            action = arrive(pid, at, self.compensation)
            if action == HOLD:
                if not lane.armed:
                    heapq.heappush(self.heap, (lane.line.next_due(), lane.sock.fileno()))
                    lane.armed = True
            else:
                self._not_held(lane, pid, action)

    def drain_ids(self, lane: Lane, stamp: int) -> None:
        """``drain`` for a lane without a bottleneck (its messages carry ids only):
        ``recvmmsg`` batches, the delay line takes each batch at once."""
        reader, fd, counters = self.reader, lane.sock.fileno(), lane.counters
        for _ in range(_DRAIN_MAX // reader.slots):
            try:
                n = reader.read(fd)
            except OSError as exc:
                if exc.errno != 105:  # ENOBUFS: the kernel dropped messages
                    raise
                counters["enobufs"] += 1
                continue
            if not n:
                return
            ids, others = nfqueue.packet_ids(reader.buf, n, reader.stride)
            for offset in others:
                self._report(lane, reader.buf.raw[offset:offset + reader.stride])
            counters["packets"] += len(ids)
            for pid, action in lane.line.arrive_all(ids, stamp, self.compensation):
                self._not_held(lane, pid, action)
            if not lane.armed and len(lane.line):
                heapq.heappush(self.heap, (lane.line.next_due(), fd))
                lane.armed = True
            if n < reader.slots:
                return

    def _not_held(self, lane: Lane, pid: int, action: int) -> None:
        """A packet the delay line did not hold: dropped, or reordered (it skips the
        line alone: a batch verdict would take every held packet before it along;
        with its CE-marked payload if it has one)."""
        payload = lane.marked.pop(pid, None)
        if action == DROP:
            lane.counters["dropped"] += 1
            lane.sock.send(nfqueue.verdict(lane.queue, pid, nfqueue.NF_DROP))
        elif action == ACCEPT_NOW:
            lane.counters["reordered"] += 1
            lane.sock.send(nfqueue.verdict(lane.queue, pid, nfqueue.NF_ACCEPT)
                           if payload is None
                           else nfqueue.verdict_with_payload(lane.queue, pid, payload))

    @staticmethod
    def _report(lane: Lane, message: bytes) -> None:
        if nfqueue.ack_error(message):
            print(f"engine: kernel error on {lane.netns} queue {lane.queue}", file=sys.stderr)

    def enqueue(self, lane: Lane, pid: int, buf: bytearray, n: int, stamp: int) -> int | None:
        """Through the lane's bottleneck: when the packet has left it, or None (dropped, or
        held by an FQ-CoDel lane, which hands it to the delay line itself)."""
        if lane.fq is not None:
            self.fq_arrive(lane, pid, buf, n, stamp)
            return None
        assert isinstance(lane.bottleneck, Bottleneck)
        size, payload = nfqueue.packet_length_and_payload(buf, n)
        whole = payload is not None and len(payload) == size
        verdict, leaves = lane.bottleneck.arrive(stamp, size, whole and is_ect(payload))
        if verdict == MARK:
            packet = bytearray(payload)
            mark_ce(packet)
            lane.marked[pid] = bytes(packet)
        elif verdict == QUEUE_DROP:
            lane.sock.send(nfqueue.verdict(lane.queue, pid, nfqueue.NF_DROP))
            return None
        return leaves

    def accept(self, lane: Lane, ids: list[int]) -> None:
        """ACCEPT ``ids`` (in order): batches, and marked packets with their new payload."""
        marked, send, last = lane.marked, lane.sock.send, None
        for pid in ids:
            payload = marked.pop(pid, None)
            if payload is None:
                last = pid
                continue
            if last is not None:
                send(nfqueue.batch_verdict(lane.queue, last))
                last = None
            send(nfqueue.verdict_with_payload(lane.queue, pid, payload))
        if last is not None:
            send(nfqueue.batch_verdict(lane.queue, last))

    # -- FQ-CoDel lanes ------------------------------------------------------
    def fq_arrive(self, lane: Lane, pid: int, buf: bytearray, n: int, stamp: int) -> None:
        """Into the lane's flow queues, after what left before it came; then what leaves now."""
        fq = lane.fq
        assert fq is not None
        self.fq_advance(lane, stamp)
        size, payload = nfqueue.packet_length_and_payload(buf, n)
        head = payload if payload is not None else b""
        ect = fq.config.ecn and len(head) == size and is_ect(head)
        if ect:
            lane.payloads[pid] = bytes(head)   # a CE mark is decided at dequeue
        self.fq_drop(lane, fq.enqueue(stamp, pid, size, flow_key(head), ect))
        self.fq_advance(lane, stamp)
        self.fq_arm(lane)

    def fq_advance(self, lane: Lane, now: int) -> None:
        """Run the lane's dequeues due by ``now``: drops get their verdict, the rest go on
        to the delay line as of the moment they have left the link."""
        assert lane.fq is not None
        payloads, counters, dropped = lane.payloads, lane.counters, []
        for pid, verdict, left in lane.fq.advance(now):
            payload = payloads.pop(pid, None)
            if verdict == QUEUE_DROP:
                dropped.append(pid)
                continue
            if verdict == MARK and payload is not None:
                packet = bytearray(payload)
                mark_ce(packet)
                lane.marked[pid] = bytes(packet)
            action = lane.line.arrive(pid, left, self.compensation)
            if action == DROP:
                counters["dropped"] += 1
                lane.marked.pop(pid, None)
                dropped.append(pid)
            elif action == ACCEPT_NOW:
                counters["reordered"] += 1
                self.accept_each(lane, [pid])
        self.fq_drop(lane, dropped)

    def fq_drop(self, lane: Lane, ids: list[int]) -> None:
        for pid in ids:
            lane.payloads.pop(pid, None)
        _send_chunked(lane.sock, [nfqueue.verdict(lane.queue, pid, nfqueue.NF_DROP)
                                  for pid in ids])

    def accept_each(self, lane: Lane, ids: list[int]) -> None:
        """ACCEPT ``ids`` one verdict each (they need not be in id order)."""
        marked, queue = lane.marked, lane.queue
        _send_chunked(lane.sock, [
            nfqueue.verdict(queue, pid, nfqueue.NF_ACCEPT) if (payload := marked.pop(pid, None))
            is None else nfqueue.verdict_with_payload(queue, pid, payload) for pid in ids])

    def fq_arm(self, lane: Lane) -> None:
        """Give the lane a timer entry at its next event unless an earlier one is live."""
        assert lane.fq is not None
        events = [t for t in (lane.fq.next_dequeue(), lane.line.next_due()) if t is not None]
        if not events:
            return
        nxt = min(events)
        if lane.fq_due is None or nxt < lane.fq_due:
            heapq.heappush(self.heap, (nxt, lane.sock.fileno()))
            lane.fq_due = nxt

    def serve_fq(self, lane: Lane, due: int, limit: int, buf: bytearray) -> None:
        """A timer entry of an FQ-CoDel lane: dequeue up to ``limit``, release what is due."""
        if due != lane.fq_due:
            return                              # superseded by an earlier entry
        lane.fq_due = None
        self.fq_advance(lane, limit)
        ids = lane.line.release_ids(limit)
        if ids:
            start = time.monotonic_ns()
            self.accept_each(lane, ids)
            self._note_release(start - due)
            lane.counters["released"] += len(ids)
            self.stamp_arrivals(start, buf)
        self.fq_arm(lane)

    def stamp_arrivals(self, stamp: int, buf: bytearray) -> None:
        """Causal stamping: read whatever is already in the sockets, as of ``stamp``."""
        for fd, _ev in self.epoll.poll(0):
            lane = self.lanes.get(fd)
            if lane is not None:
                self.drain(lane, stamp, buf)

    def release_due(self, limit: int, buf: bytearray, now_ns=time.monotonic_ns) -> None:
        heap, lanes = self.heap, self.lanes
        while heap and heap[0][0] <= limit:
            due, fd = heapq.heappop(heap)
            lane = lanes.get(fd)
            if lane is None:
                continue
            if lane.fq is not None:
                self.serve_fq(lane, due, limit, buf)
                continue
            lane.armed = False
            held = len(lane.line)
            if lane.marked:
                ids = lane.line.release_ids(limit)
                last = ids[-1] if ids else None
            else:
                ids, last = None, lane.line.release(limit)
            if last is not None:
                start = now_ns()
                if ids is None:
                    lane.sock.send(nfqueue.batch_verdict(lane.queue, last))
                else:
                    self.accept(lane, ids)
                self._note_release(start - due)
                lane.counters["released"] += held - len(lane.line)   # packets, not batches
                self.stamp_arrivals(start, buf)
            nxt = lane.line.next_due()
            if nxt is not None and not lane.armed:
                heapq.heappush(heap, (nxt, fd))
                lane.armed = True

    def _note_release(self, late_ns: int) -> None:
        """A release ``late_ns`` after its (compensated) due time: record the error
        against the configured delay and move the compensation towards the mean."""
        self._note_late(late_ns - self.compensation)
        self.compensation = next_compensation(self.compensation, late_ns)

    def _note_late(self, late_ns: int) -> None:
        late = self.late
        if len(late) < _LATE_SAMPLES:
            late.append(late_ns)
        else:
            late[self.rng.getrandbits(12) % _LATE_SAMPLES] = late_ns

    def adapt_lead(self, woke: int, asked: int) -> None:
        """A timer wake-up ``woke - asked`` ns late: follow a low quantile of that."""
        late = min(_LEAD_MAX_NS, max(0, woke - asked))
        if late < self.lead:
            self.lead -= (self.lead - late) >> 1
        else:
            self.lead += (late - self.lead) >> _LEAD_SHIFT


def next_compensation(current_ns: int, late_ns: int) -> int:
    """The compensation after a release ``late_ns`` after its compensated due time: an
    exponentially weighted mean of the lateness (the timers' lateness does not depend on
    the compensation, so this converges on it), an outlier counted as at most
    ``_COMP_MAX_NS``, the result within 0 and ``_COMP_MAX_NS``."""
    late = min(_COMP_MAX_NS, max(-_COMP_MAX_NS, late_ns))
    moved = current_ns + ((late - current_ns) >> _COMP_SHIFT)
    return min(_COMP_MAX_NS, max(0, moved))


def _bottleneck(config: DelayConfig, rng: random.Random) -> Bottleneck | FqCoDel | None:
    wanted = config.bottleneck()
    if wanted is None:
        return None
    return FqCoDel(wanted, rng) if _is_fq(config) else Bottleneck(wanted, rng)


def _is_fq(config: DelayConfig) -> bool:
    return config.aqm == "fq_codel"


def _last_held(lane: Lane) -> int | None:
    """Pop everything the lane holds (shutdown): the highest id, for one batch verdict."""
    if lane.fq is None:
        return lane.line.release_all()
    ids = lane.fq.held_ids() + lane.line.release_ids(1 << 62)
    return max(ids) if ids else None


def _send_chunked(sock: socket.socket, messages: list[bytes]) -> None:
    """Several netlink messages per send (the kernel handles each in turn)."""
    chunk: list[bytes] = []
    size = 0
    for msg in messages:
        if size + len(msg) > _VERDICT_CHUNK and chunk:
            sock.send(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(msg)
        size += len(msg)
    if chunk:
        sock.send(b"".join(chunk))


def summary_us(samples_ns: list[int]) -> dict | None:
    """Mean and quantiles in microseconds (None without samples)."""
    if not samples_ns:
        return None
    s = sorted(samples_ns)
    return {"samples": len(s), "mean": round(sum(s) / len(s) / 1e3, 1),
            "p50": round(s[len(s) // 2] / 1e3, 1), "p99": round(s[int(len(s) * 0.99)] / 1e3, 1)}


def calibrate(engine: Engine, rounds: int = 100, sleep_ns: int = 200_000) -> None:
    """Measure how late this process's timed wake-ups come (the floor of every pass's
    error: DESIGN.md), record it, and start the lead compensation from its median."""
    late = []
    for _ in range(rounds):
        asked = time.monotonic_ns() + sleep_ns
        select.select([], [], [], sleep_ns / 1e9)
        late.append(max(0, time.monotonic_ns() - asked))
    engine.lead = min(_LEAD_MAX_NS, sorted(late)[len(late) // 2])
    # a first guess (releases do more than wake up); each release then corrects it
    engine.compensation = min(_COMP_MAX_NS, sum(late) // len(late))
    engine.calibration = {"timer_late_us": summary_us(late), "sleep_us": sleep_ns / 1e3,
                          "compensation_start_us": round(engine.compensation / 1e3, 1)}


def calibrate_pass(engine: Engine) -> None:
    """Measure the NFQUEUE pass of a woken arrival (passcal.py) and stamp woken arrivals
    by it; where it cannot be measured, the timer's lead stays (and the status says why)."""
    assert engine.calibration is not None
    start = time.monotonic_ns()
    samples, why = passcal.measure_pass()
    engine.pass_ns = passcal.pass_estimate(samples)
    if engine.pass_ns is None and why is None:
        why = (f"{len(samples.queued)} queued and {len(samples.direct)} direct datagrams "
               f"came back, {passcal.MIN_SAMPLES} of each needed")
    engine.calibration.update({
        "pass_wake_us": summary_us(samples.wake), "pass_direct_us": summary_us(samples.direct),
        "pass_queued_us": summary_us(samples.queued),
        "pass_us": None if engine.pass_ns is None else round(engine.pass_ns / 1e3, 1),
        "pass_error": why, "pass_ms": round((time.monotonic_ns() - start) / 1e6)})


def _signals(flags: dict[str, bool]) -> tuple[socket.socket, socket.socket]:
    """Signals set ``flags`` and wake the loop through a socketpair (both ends returned:
    the write end must stay open, or the read end reads as hung up forever)."""
    wake_r, wake_w = socket.socketpair()
    for s in (wake_r, wake_w):
        s.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    names = {signal.SIGTERM: "stop", signal.SIGINT: "stop", signal.SIGHUP: "reload",
             signal.SIGUSR1: "stats"}
    for signum, flag in names.items():
        signal.signal(signum, lambda _s, _f, flag=flag: flags.__setitem__(flag, True))
    return wake_r, wake_w


def loop(engine: Engine, flags: dict[str, bool], wake: socket.socket,
         query: socket.socket | None = None) -> None:
    buf = bytearray(65536)
    now_ns = time.monotonic_ns
    epfd = engine.epoll.fileno()
    engine.epoll.register(wake.fileno(), select.EPOLLIN)
    query_fd = -1 if query is None else query.fileno()
    if query is not None:
        engine.epoll.register(query_fd, select.EPOLLIN)
    while not flags["stop"]:
        due = engine.heap[0][0] if engine.heap else None
        asked = None if due is None else due - engine.lead
        timeout = None if asked is None else max(0.0, (asked - now_ns()) / 1e9)
        woke_late = 0
        if timeout != 0.0:
            ready, _, _ = select.select([epfd], [], [], timeout)
            if not ready and asked is not None:
                engine.adapt_lead(now_ns(), asked)
            # what woke us queued about that long ago
            woke_late = passcal.woken_lead(bool(ready), engine.lead, engine.pass_ns)
        stamp = now_ns() - woke_late
        for fd, _ev in engine.epoll.poll(0):
            lane = engine.lanes.get(fd)
            if lane is not None:
                engine.drain(lane, stamp, buf)
            elif fd == wake.fileno():
                _drain_wake(wake)
            elif fd == query_fd:
                engine.answer_queries(query)
        if flags["reload"]:
            flags["reload"] = False
            engine.load()
        if flags["stats"]:
            flags["stats"] = False
            engine.write_status()
        engine.release_due(now_ns() + engine.lead, buf)


def _drain_wake(wake: socket.socket) -> None:
    try:
        wake.recv(4096)
    except BlockingIOError:
        pass


PR_SET_TIMERSLACK = 29


def tune_process(realtime_prio: int) -> bool:
    """Tight timers, and SCHED_FIFO when allowed. Returns whether FIFO was granted."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    if realtime_prio <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_prio))
        return True
    except OSError:
        return False


def run(control: str, status: str, realtime_prio: int, seed: int | None) -> int:
    gc.disable()  # the loop allocates no cycles; avoid collector pauses
    realtime = tune_process(realtime_prio)
    flags = {"stop": False, "reload": False, "stats": False}
    wake, _wake_w = _signals(flags)
    engine = Engine(control, status, seed, realtime)
    calibrate(engine)
    calibrate_pass(engine)
    engine.load()
    query = open_query(query_path(status))
    try:
        loop(engine, flags, wake, query)
    finally:
        engine.shutdown()
        if query is not None:
            query.close()
            os.unlink(query_path(status))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.emulation.engine",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--control", required=True, help="engine.json")
    parser.add_argument("--status", required=True, help="engine.status")
    parser.add_argument("--realtime", type=int, default=10,
                        help="SCHED_FIFO priority, 0 for the normal scheduler")
    parser.add_argument("--seed", type=int, default=None)
    # identification only: lets cleanup match this process by exact argv
    parser.add_argument("--owner", required=True)
    args = parser.parse_args(argv)
    return run(args.control, args.status, args.realtime, args.seed)


if __name__ == "__main__":
    sys.exit(main())
