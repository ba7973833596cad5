"""The userspace delay daemon: ``python -m testbed.emulation.delayd``.

One daemon serves one NFQUEUE (one direction of one link) inside one
network namespace. It binds the queue (META copy mode, GSO, raised maxlen,
no fail-open), reads packet ids, asks a ``DelayLine`` what to do with each
and sends batched ACCEPT verdicts when held packets fall due.

Control: it reads its configuration from ``--config`` (JSON) at start and
on SIGHUP, and after each (re)load writes ``--status`` (JSON: pid, queue,
generation, config, realtime) atomically; the backend reads that file back
to confirm. SIGTERM/SIGINT release every held packet and exit. The kernel
drops whatever is still queued when the socket closes, so the daemon must
not die silently: the backend supervises it with ``check_alive``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import random
import select
import signal
import socket
import sys
import time

from testbed.emulation import nfqueue
from testbed.emulation.delayline import ACCEPT_NOW, DROP, DelayConfig, DelayLine

PR_SET_TIMERSLACK = 29
_DRAIN_MAX = 512
# Wake-up lateness compensation: the daemon wakes ``lead`` ns before a packet
# falls due and releases what is due within ``lead``; ``lead`` follows a low
# quantile of the lateness observed on timer wake-ups (it drops by half the
# gap at once, rises by 1/32), capped, so a CPU-starved moment cannot make
# packets leave early. A packet read right after a
# wake-up is stamped as having arrived ``lead`` earlier (the same scheduler
# latency delayed our reading it; the kernel gives no queueing timestamp for
# locally sent packets).
_LEAD_MAX_NS = 200_000
_LEAD_SHIFT = 5


def _read_config(path: str) -> tuple[int, DelayConfig]:
    with open(path) as f:
        data = json.load(f)
    return int(data["generation"]), DelayConfig.from_dict(data["delay"])


def _write_status(path: str, status: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def _tune_process(realtime_prio: int) -> bool:
    """Tight timers, and SCHED_FIFO when allowed. Returns whether FIFO was granted."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    if realtime_prio <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime_prio))
        return True
    except (PermissionError, OSError):
        return False


def run(queue_num: int, config_path: str, status_path: str, maxlen: int,
        realtime_prio: int, seed: int | None) -> int:
    gc.disable()  # the loop allocates no cycles; avoid collector pauses
    generation, config = _read_config(config_path)
    realtime = _tune_process(realtime_prio)
    sock = nfqueue.open_queue(queue_num, maxlen, rcvbuf=32 * 1024 * 1024)
    sock.setblocking(False)
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    flags = {"stop": False, "reload": False}

    def on_stop(_sig: int, _frame: object) -> None:
        flags["stop"] = True

    def on_hup(_sig: int, _frame: object) -> None:
        flags["reload"] = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    line = DelayLine(config, random.Random(seed))
    status = {"pid": os.getpid(), "queue": queue_num, "generation": generation,
              "config": config.to_dict(), "realtime": realtime, "maxlen": maxlen}
    _write_status(status_path, status)

    buf = bytearray(65536)
    recv_into = sock.recv_into
    send = sock.send
    packet_id = nfqueue.packet_id
    arrive = line.arrive
    now_ns = time.monotonic_ns
    rlist = [sock, wake_r]
    enobufs = 0
    lead = 0
    while not flags["stop"]:
        due = line.next_due()
        if due is None:
            timeout = None
        else:
            timeout = max(0.0, (due - lead - now_ns()) / 1e9)
        if timeout != 0.0:
            ready, _, _ = select.select(rlist, [], [], timeout)
            if not ready and due is not None:
                # a timer wake-up: how late was it against the wake-up we asked for?
                late = min(_LEAD_MAX_NS, max(0, now_ns() - (due - lead)))
                # follow a LOW quantile of the lateness: down fast, up slowly, so
                # that a loaded machine's stalls do not make packets leave early
                if late < lead:
                    lead -= (lead - late) >> 1
                else:
                    lead += (late - lead) >> _LEAD_SHIFT
            if wake_r in ready:
                try:
                    wake_r.recv(4096)
                except BlockingIOError:
                    pass
        if flags["reload"]:
            flags["reload"] = False
            generation, config = _read_config(config_path)
            line.configure(config)
            status.update(generation=generation, config=config.to_dict())
            _write_status(status_path, status)
        # a packet that woke us queued about one wake-up latency ago
        woke_late = lead if timeout != 0.0 else 0
        for _ in range(_DRAIN_MAX):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == 105:  # ENOBUFS: kernel dropped messages
                    enobufs += 1
                    continue
                raise
            pid = packet_id(buf)
            if pid is None:
                if n >= 20 and nfqueue.ack_error(bytes(buf[:n])):
                    print(f"delayd: kernel error on queue {queue_num}", file=sys.stderr)
                continue
            action = arrive(pid, now_ns() - woke_late)
            woke_late = 0
            if action == DROP:
                send(nfqueue.verdict(queue_num, pid, nfqueue.NF_DROP))
            elif action == ACCEPT_NOW:
                send(nfqueue.verdict(queue_num, pid, nfqueue.NF_ACCEPT))
        last = line.release(now_ns() + lead)
        if last is not None:
            send(nfqueue.batch_verdict(queue_num, last))
    last = line.release_all()
    if last is not None:
        send(nfqueue.batch_verdict(queue_num, last))
    sock.close()
    if enobufs:
        print(f"delayd: {enobufs} receive buffer overflows", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed.emulation.delayd",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--maxlen", type=int, default=65536)
    parser.add_argument("--realtime", type=int, default=10,
                        help="SCHED_FIFO priority, 0 for the normal scheduler")
    parser.add_argument("--seed", type=int, default=None)
    # identification only: lets cleanup match this process by exact argv
    parser.add_argument("--owner", required=True)
    parser.add_argument("--ifname", required=True)
    args = parser.parse_args(argv)
    return run(args.queue, args.config, args.status, args.maxlen, args.realtime, args.seed)


if __name__ == "__main__":
    sys.exit(main())
