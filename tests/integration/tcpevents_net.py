"""Two namespaces joined by a veth, and a TCP sender/receiver in them, for the tcp events tests.

The sender reads its own socket's ``tcp_info`` after the receiver has
acknowledged everything (it shuts down writing and waits for the receiver's
EOF), so ``total_retrans`` is final when it is read.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_counter = itertools.count()

RECEIVER = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen()
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    while conn.recv(1 << 16):
        pass
    conn.close()
"""

SENDER = r"""
import json, socket, struct, sys, time
from testbed.collect.tcpinfo import TCP_INFO_FIELDS
dst, port, nbytes, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
chunk, gap, cc = b"x" * int(sys.argv[5]), float(sys.argv[6]), sys.argv[7].encode()
s = socket.create_connection((dst, port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(json.dumps({"sport": s.getsockname()[1]}), flush=True)
sent, end = 0, time.monotonic() + seconds
while sent < nbytes or time.monotonic() < end:
    sent += s.send(chunk)
    if gap:
        time.sleep(gap)
s.shutdown(socket.SHUT_WR)
while s.recv(1 << 16):
    pass
layout = struct.Struct("=" + "".join(f for _, f in TCP_INFO_FIELDS))
raw = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, layout.size).ljust(layout.size, b"\0")
info = dict(zip((n for n, _ in TCP_INFO_FIELDS), layout.unpack(raw)))
print(json.dumps({"sport": s.getsockname()[1], "sent": sent, "total_retrans": info["total_retrans"]}))
s.close()
"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def in_ns(ns: str, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True,
                          text=True, **kwargs)


@dataclass
class Pair:
    """Namespaces ``a`` (sender, 10.77.0.1) and ``b`` (receiver, 10.77.0.2); ``dev_a`` is
    a's end of the veth. This kernel has no sch_netem: loss is an iptables rule on the
    receiver's INPUT, on the data direction only."""

    a: str
    b: str
    dev_a: str
    dst: str = "10.77.0.2"

    def drop(self, port: int, probability: float = 1.0, *, delete: bool = False) -> None:
        """Drop data segments to ``port`` with ``probability`` (1.0: all) at the receiver."""
        rule = ["INPUT", "-p", "tcp", "--dport", str(port)]
        if probability < 1.0:
            rule += ["-m", "statistic", "--mode", "random", "--probability", str(probability)]
        in_ns(self.b, "iptables", "-D" if delete else "-A", *rule, "-j", "DROP")

    def receiver(self, port: int) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, "-c", RECEIVER,
                                 str(port)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    def rate(self, rate: str) -> None:
        """A tbf bottleneck on the sender's side of the veth (no netem here: without one,
        a veth never fills cwnd and slow start has nothing to grow against)."""
        in_ns(self.a, "tc", "qdisc", "add", "dev", self.dev_a, "root", "tbf", "rate", rate,
              "burst", "20k", "latency", "50ms")

    def sender(self, port: int, nbytes: int, seconds: float = 0.0, chunk: int = 65536,
               gap: float = 0.0, cc: str = "cubic") -> subprocess.Popen:
        """A sender of ``nbytes`` (and for at least ``seconds``), ``chunk`` bytes per send
        with ``gap`` seconds between sends, with congestion control ``cc``; its first line
        is its source port."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        return subprocess.Popen(["ip", "netns", "exec", self.a, sys.executable, "-c", SENDER,
                                 self.dst, str(port), str(nbytes), str(seconds), str(chunk),
                                 str(gap), cc], stdout=subprocess.PIPE, text=True, env=env)

    def send(self, port: int, nbytes: int, seconds: float = 0.0, chunk: int = 65536,
             gap: float = 0.0, cc: str = "cubic") -> dict:
        """Run a sender to the end: its port, bytes sent and final total_retrans."""
        proc = self.sender(port, nbytes, seconds, chunk, gap, cc)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        return json.loads(out.splitlines()[-1])


def make_pair() -> Pair:
    tag = f"ev{os.getpid() % 100000}x{next(_counter)}"
    a, b = f"{tag}a", f"{tag}b"
    ip("netns", "add", a)
    try:
        ip("netns", "add", b)
        ip("link", "add", f"{tag}0", "netns", a, "type", "veth", "peer", "name", f"{tag}1",
           "netns", b)
        for ns, dev, addr in ((a, f"{tag}0", "10.77.0.1/24"), (b, f"{tag}1", "10.77.0.2/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        # one segment per skb at the sender, so a tcp_retransmit_skb event is one segment of
        # tcp_info's total_retrans (which counts segments)
        ip("-n", a, "link", "set", f"{tag}0", "gso_max_segs", "1")
    except BaseException:
        remove_pair(Pair(a, b, f"{tag}0"))
        raise
    return Pair(a, b, f"{tag}0")


def remove_pair(pair: Pair) -> None:
    for ns in (pair.a, pair.b):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


SAMPLE_EVENTS = ("tcp/tcp_probe", "tcp/tcp_cong_state_set", "tcp/tcp_retransmit_skb",
                 "tcp/tcp_destroy_sock")


def capture_sample(out_dir: Path) -> None:
    """Record ``tests/data/tcpevents_sample.spool`` (+ ``.json``: the sender's own tcp_info
    and the t0 it was decoded against): bursts of 4 segments every 20 ms through a link
    that drops 10 % of data segments, and all of them for 300 ms in the middle."""
    from testbed.collect.tcpevents import TcpEventsCollector
    from testbed.kernel.tracefs import PREFIX
    port = 47000 + os.getpid() % 1000
    pair = make_pair()
    try:
        receiver = pair.receiver(port)
        pair.drop(port, 0.1)
        collector = TcpEventsCollector(out_dir / "tcpevents_journal", f"{PREFIX}ev.sample",
                                       frozenset({port}), out_dir / "tcpevents_sample.spool",
                                       buffer_kb=512, events=SAMPLE_EVENTS)
        t0 = time.monotonic()
        collector.start()
        sender = pair.sender(port, 0, seconds=0.5, chunk=4 * 1448, gap=0.02)
        time.sleep(0.2)
        pair.drop(port)
        time.sleep(0.3)
        pair.drop(port, delete=True)
        out, _ = sender.communicate(timeout=60)
        stats = collector.stop()
        receiver.kill()
        receiver.wait()
    finally:
        remove_pair(pair)
    (out_dir / "tcpevents_journal" / "tracefs").unlink()
    (out_dir / "tcpevents_journal").rmdir()
    result = json.loads(out.splitlines()[-1])
    result.update(t0=t0, port=port, dst="10.77.0.2", src="10.77.0.1",
                  kernel=os.uname().release, trace=stats.as_dict())
    (out_dir / "tcpevents_sample.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    capture_sample(Path(sys.argv[1]))
