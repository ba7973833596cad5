"""Accuracy and cost of the userspace link emulation backend.

Builds a line  a --(eth0)-- r --(eth1)-- b  of namespaces (tbbench-<random>),
impairs r's egress towards b, and measures with real packets:

- delay: UDP probes a->b->a, added delay = RTT - base RTT (mean, p99 error);
  RTTs from kernel receive timestamps minus the echo's own turnaround, so
  the probing processes' scheduling does not count (the delay line's does);
- jitter, loss, rate: configured vs measured;
- throughput through a 20 ms delay line (iperf3, 5 s) with offloads on and
  off, and the link engine's CPU share, against the floor (the same line
  without the engine), in interleaved rounds (``--repeat``: medians);
- with ``--lines N``: the aggregate of N such lines side by side, one iperf3
  each, all through one engine.

Run as root:  python benchmarks/bench_links.py [--only accuracy|throughput] [--repeat 3]
              [--lines 10]       (prints a table with the load average; ~1 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from emu_fixtures import EmuPair, udp_blast_received  # noqa: E402
from testbed.emulation import UserspaceBackend, enginectl, set_offloads  # noqa: E402
from testbed.kernel.netns import discard, enter  # noqa: E402
from testbed.model.impairment import parse_impairment  # noqa: E402


def sysctl(ns: str, key: str, value: str) -> None:
    with enter(ns), open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(value)


@contextmanager
def line(state_dir: Path):
    from pyroute2 import IPRoute, netns

    tag = secrets.token_hex(3)
    a, r, b = (f"tbbench-{tag}-{x}" for x in "arb")
    try:
        for ns in (a, r, b):
            netns.create(ns)
        with IPRoute() as ipr:
            for left, right, lname, rname in ((a, r, "eth0", "eth0"), (r, b, "eth1", "eth0")):
                t1, t2 = f"tbb{tag}{left[-1]}{right[-1]}1", f"tbb{tag}{left[-1]}{right[-1]}2"
                ipr.link("add", ifname=t1, kind="veth", peer=t2)
                ipr.link("set", index=ipr.link_lookup(ifname=t1)[0], net_ns_fd=left)
                ipr.link("set", index=ipr.link_lookup(ifname=t2)[0], net_ns_fd=right)
                for ns, tmp, name in ((left, t1, lname), (right, t2, rname)):
                    with enter(ns), IPRoute() as nipr:
                        idx = nipr.link_lookup(ifname=tmp)[0]
                        nipr.link("set", index=idx, ifname=name, state="up")
        addrs = {(a, "eth0"): "10.231.1.1", (r, "eth0"): "10.231.1.2",
                 (r, "eth1"): "10.231.2.1", (b, "eth0"): "10.231.2.2"}
        for (ns, ifname), addr in addrs.items():
            with enter(ns), IPRoute() as ipr:
                ipr.addr("add", index=ipr.link_lookup(ifname=ifname)[0], address=addr, prefixlen=24)
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        with enter(a), IPRoute() as ipr:
            ipr.route("add", dst="10.231.2.0/24", gateway="10.231.1.2")
        with enter(b), IPRoute() as ipr:
            ipr.route("add", dst="10.231.1.0/24", gateway="10.231.2.1")
        sysctl(r, "net.ipv4.ip_forward", "1")
        for ns in (a, r, b):
            sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
        for ns in (a, b):
            sysctl(ns, "net.ipv4.tcp_rmem", "4096 131072 67108864")
            sysctl(ns, "net.ipv4.tcp_wmem", "4096 131072 67108864")
        yield a, r, b
    finally:
        discard([a, r, b])


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def _kernel_rx(sock: socket.socket) -> tuple[bytes, tuple, int] | None:
    """One datagram with the kernel's receive timestamp (ns, CLOCK_REALTIME)."""
    try:
        data, anc, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(16))
    except socket.timeout:
        return None
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("=qq", raw[:16])
            return data, peer, sec * 1_000_000_000 + nsec
    return data, peer, time.time_ns()


def udp_rtts(pair: EmuPair, count: int, interval: float, port: int = 7779,
             timeout: float = 0.3) -> list[float]:
    """RTTs (s) of ``count`` UDP probes a -> b -> a, timed so that neither
    Python process's scheduling counts: both ends take the kernel's receive
    timestamp (SO_TIMESTAMPNS), and the echo reports its own turnaround
    (its send time minus its kernel receive time), which is subtracted."""
    with enter(pair.b):
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with enter(pair.a):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (server, client):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.settimeout(0.1)
    server.bind((pair.addr_b, port))
    client.bind((pair.addr_a, 0))
    stop = threading.Event()
    rtts: dict[int, float] = {}

    def echo() -> None:
        while not stop.is_set():
            got = _kernel_rx(server)
            if got is None:
                continue
            data, peer, rx = got
            server.sendto(data[:12] + struct.pack("!q", time.time_ns() - rx), peer)

    def receive() -> None:
        quiet = None
        while True:
            got = _kernel_rx(client)
            if got is None:
                if stop.is_set():
                    quiet = quiet or time.monotonic()
                    if time.monotonic() - quiet > timeout:
                        return
                continue
            quiet = None
            data, _peer, rx = got
            seq, sent, turnaround = struct.unpack("!Iqq", data[:20])
            rtts[seq] = (rx - sent - turnaround) / 1e9

    threads = [threading.Thread(target=echo, daemon=True),
               threading.Thread(target=receive, daemon=True)]
    for t in threads:
        t.start()
    try:
        start = time.monotonic()
        for seq in range(count):
            target = start + seq * interval
            while (now := time.monotonic()) < target:
                time.sleep(min(target - now, 0.001))
            client.sendto(struct.pack("!Iq", seq, time.time_ns()) + b"x" * 52,
                          (pair.addr_b, port))
        time.sleep(timeout)  # the last probes are still in the delay line
    finally:
        stop.set()
        for t in threads:
            t.join(timeout + 1)
        server.close()
        client.close()
    return [rtts[k] for k in sorted(rtts)]


def iperf(a: str, b: str, seconds: int = 5) -> float:
    return iperf_start(a, b, seconds)()


def iperf_start(a: str, b: str, seconds: int = 5):
    """Start an iperf3 flow a -> b; returns a function waiting for its goodput (bit/s)."""
    with enter(b):
        server = subprocess.Popen(["iperf3", "-s", "-1", "-p", "5301"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    with enter(a):
        client = subprocess.Popen(["iperf3", "-c", "10.231.2.2", "-p", "5301", "-t",
                                   str(seconds), "-O", "2", "-J"], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)

    def result() -> float:
        try:
            out, _ = client.communicate(timeout=60)
            return json.loads(out)["end"]["sum_received"]["bits_per_second"]
        finally:
            server.kill()
            server.wait()
    return result


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def accuracy(be: UserspaceBackend, a: str, r: str, b: str, d: str) -> list[tuple[str, str, str]]:
    rows = []
    owner = "bench"
    probe = EmuPair(a=a, b=b, addr_a="10.231.1.1", addr_b="10.231.2.2", owner=owner,
                    state_dir=Path(d))

    def apply(**kw):
        be.apply(r, "eth1", parse_impairment(kw, file=None, path="bench"), owner_tag=owner,
                 state_dir=d, rtt_hint=None)

    def remove():
        be.remove(r, "eth1", owner_tag=owner, state_dir=d)

    base = statistics.median(udp_rtts(probe, 200, 0.002, timeout=0.3))
    for delay_ms in (5, 20, 100):
        apply(delay=f"{delay_ms}ms")
        rtts = udp_rtts(probe, 500, 0.004, timeout=0.3)
        status = enginectl.fresh_status(d) or {}
        remove()
        err = sorted((x - base) * 1e3 - delay_ms for x in rtts)
        p99 = err[int(0.99 * len(err)) - 1]
        rows.append((f"delay {delay_ms} ms (n={len(rtts)})",
                     f"mean err {statistics.mean(err):+.3f} ms",
                     f"p99 err {p99:+.3f} ms"))
    calibration = status.get("calibration") or {}
    rows.append(("engine (last start)", f"woken-arrival pass {calibration.get('pass_us')} us",
                 f"timer lead {status.get('lead_ns', 0) / 1e3:.1f} us; release late "
                 f"{status.get('release_late_us')}; load "
                 f"{os.getloadavg()[0]:.1f}"))
    apply(delay="20ms", jitter="2ms", distribution="normal")
    rtts = udp_rtts(probe, 600, 0.01, timeout=0.3)
    remove()
    rows.append(("jitter 2 ms normal", f"std {statistics.stdev(rtts) * 1e3:.3f} ms",
                 "want 2.000 ms"))
    apply(loss="1%")
    n = 20000
    got = udp_blast_received(probe, n)
    remove()
    sd = math.sqrt(n * 0.01 * 0.99)
    rows.append(("loss 1%", f"lost {(n - got) / n * 100:.2f} % (n={n})",
                 f"95% interval {(n * 0.01 - 2 * sd) / n * 100:.2f}-"
                 f"{(n * 0.01 + 2 * sd) / n * 100:.2f} %"))
    apply(rate="100mbit", queue="1bdp")
    bps = iperf(a, b, 4)
    remove()
    rows.append(("rate 100 Mbit/s (tbf)", f"goodput {bps / 1e6:.2f} Mbit/s",
                 f"{bps / 100e6 * 100:.2f} % (frame-level ideal 95.64 %)"))
    return rows


def one_round(be: UserspaceBackend, lines: list[tuple[str, str, str]], d: str,
              delay: bool) -> tuple[float, float]:
    """(aggregate goodput bit/s, engine CPU in cores) of one iperf3 per line at once,
    through a 20 ms delay line each (``delay``) or through the bare lines (the floor)."""
    imp = parse_impairment({"delay": "20ms"}, file=None, path="bench")
    if delay:
        for _a, r, _b in lines:
            be.apply(r, "eth1", imp, owner_tag="bench", state_dir=d, rtt_hint=None)
    pid = enginectl.read_handle(enginectl.EngineFiles.of(d)).pid if delay else None
    t0, c0 = time.monotonic(), cpu_ticks(pid) if pid else 0
    waits = [iperf_start(a, b, 5) for a, _r, b in lines]
    total = sum(wait() for wait in waits)
    cpu = (cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0) \
        if pid else 0.0
    if delay:
        for _a, r, _b in lines:
            be.remove(r, "eth1", owner_tag="bench", state_dir=d)
    return total, cpu


def throughput(be: UserspaceBackend, lines: list[tuple[str, str, str]], d: str,
               repeat: int) -> list[tuple[str, str, str]]:
    """Interleaved rounds (floor, engine) x (offloads on, off): medians, with the load."""
    got: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    for _ in range(repeat):
        for offloads in (True, False):
            for a, r, b in lines:
                for ns, ifs in ((a, ["eth0"]), (r, ["eth0", "eth1"]), (b, ["eth0"])):
                    for ifname in ifs:
                        set_offloads(ns, ifname, on=offloads)
            for delay in (False, True):
                bps, cpu = one_round(be, lines, d, delay)
                got.setdefault(("engine" if delay else "floor", offloads), []).append(
                    (bps, cpu, os.getloadavg()[0]))
    rows = []
    for offloads in (True, False):
        eng, floor = got[("engine", offloads)], got[("floor", offloads)]
        med = statistics.median(x[0] for x in eng) / 1e9
        fmed = statistics.median(x[0] for x in floor) / 1e9
        rows.append((f"{len(lines)} x 20 ms delay line, offloads {'on' if offloads else 'off'}",
                     f"{med:.2f} Gbit/s (floor {fmed:.2f}, {med / fmed:.2f}x)",
                     f"runs {' '.join(f'{x[0] / 1e9:.2f}' for x in eng)}; engine CPU "
                     f"{statistics.median(x[1] for x in eng) * 100:.0f} % of a core; load "
                     f"{min(x[2] for x in eng + floor):.1f}-{max(x[2] for x in eng + floor):.1f}"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("all", "accuracy", "throughput"), default="all")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved throughput rounds")
    parser.add_argument("--lines", type=int, default=1, help="lines side by side (throughput)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    be = UserspaceBackend()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        lines = [stack.enter_context(line(Path(d))) for _ in range(args.lines)]
        if args.only != "throughput":
            rows += accuracy(be, *lines[0], d)
        if args.only != "accuracy":
            rows += throughput(be, lines, d, args.repeat)
    width = max(len(r[0]) for r in rows)
    for name, v1, v2 in rows:
        print(f"{name:<{width}}  {v1:<36} {v2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
