"""Benchmark the tcp_info sampler (not a test; run as root or any user).

Starts N bulk TCP flows on loopback with iperf3 (rate-limited so the host is
not saturated), then measures:
  1. 100 flows sampled every 10 ms: CPU used by the sampler thread (< 10 % of a core);
  2. 10 flows sampled every 1 ms: share of missed intervals (< 1 %);
  3. ``ss -tin`` at the same 10 ms rate over the same sockets, CPU of ss
     processes plus the loop, and the ratio to the sampler;
  4. decoding the same dumps with pyroute2's DiagSocket marshal instead.

    python benchmarks/bench_sampler.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.collect import tcpinfo  # noqa: E402

SPOOL_DIR = os.environ.get("SPOOL_DIR")  # e.g. /dev/shm, to take the disk out of the picture


def flows(port: int, n: int, seconds: float) -> tuple[subprocess.Popen, subprocess.Popen]:
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port), "-B", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    client = subprocess.Popen(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-P", str(n),
                               "-t", f"{seconds + 3:g}", "-b", "2M"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return server, client


def sample(port: int, interval: float, seconds: float) -> tcpinfo.SamplerStats:
    with tempfile.TemporaryDirectory(dir=SPOOL_DIR) as tmp:
        s = tcpinfo.TcpInfoSampler([("lo", tcpinfo.open_diag_socket())], Path(tmp) / "spool",
                                   interval=interval, ports=frozenset({port}))
        s.start()
        time.sleep(seconds)
        stats = s.stop()
        rows, _ = tcpinfo.decode_spool((Path(tmp) / "spool").read_bytes(), ["lo"])
        print(f"  decoded {len(rows)} rows, sockets per tick ~{len(rows) / max(stats.ticks, 1):.1f}")
        return stats


def ss_loop(port: int, interval: float, seconds: float) -> float:
    """CPU seconds per wall second of running ``ss -tin`` every ``interval``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = time.process_time()
    t0 = time.monotonic()
    nxt = t0
    runs = 0
    while time.monotonic() - t0 < seconds:
        subprocess.run(["ss", "-tin", "dport", "=", f":{port}"], stdout=subprocess.DEVNULL)
        runs += 1
        nxt += interval
        delay = nxt - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + \
        (time.process_time() - self0)
    print(f"  ss: {runs} runs in {wall:.1f}s (asked {seconds / interval:.0f})")
    return cpu / wall


def pyroute2_cost(port: int, reps: int = 200) -> tuple[float, float, int]:
    from pyroute2.netlink.diag import MarshalDiag
    sock = tcpinfo.open_diag_socket()
    buf = bytearray(1 << 18)
    req = tcpinfo.build_request()
    dumps = []
    for _ in range(reps):
        msgs = [bytes(m) for m in tcpinfo.dump(sock, req, buf)]
        dumps.append(b"".join(len(m).to_bytes(4, "little") for m in msgs))
        dumps[-1] = msgs
    import struct
    raw = [b"".join(struct.pack("=IHHII", len(m) + 16, 20, 2, 1, 0) + m + b"\0" * (-len(m) % 4)
                    for m in msgs) for msgs in dumps]
    t = time.process_time()
    for data in raw:
        list(MarshalDiag().parse(data))
    theirs = (time.process_time() - t) / reps
    t = time.process_time()
    for msgs in dumps:
        for m in msgs:
            tcpinfo.decode_message(m)
    ours = (time.process_time() - t) / reps
    return theirs, ours, len(dumps[0])


def load() -> str:
    return "load " + " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    secs = args.seconds
    procs = []
    print(f"{load()}, {os.cpu_count()} CPUs, kernel {os.uname().release}")
    try:
        print("1) 100 flows, 10 ms")
        procs += flows(15601, 100, secs * 2 + 2)
        st = sample(15601, 0.010, secs)
        print(f"  sampler CPU {st.as_dict()['cpu_fraction']:.1%} of a core, missed {st.missed_fraction:.2%}, "
              f"SCHED_FIFO {st.realtime}, {load()}")
        theirs, ours, n = pyroute2_cost(15601, 50)
        print(f"4) decode one dump of {n} sockets (unfiltered: both ends): pyroute2 {theirs * 1e3:.2f} ms, "
              f"ours {ours * 1e3:.2f} ms (ours is only paid once, after the run)")
        print("3) ss -tin, same 100 flows, 10 ms")
        ss = ss_loop(15601, 0.010, secs)
        print(f"  ss CPU {ss:.1%} of a core -> ss / sampler = {ss / max(st.as_dict()['cpu_fraction'], 1e-9):.1f}x, "
              f"{load()}")
        for p in procs:
            p.terminate()
            p.wait(5)
        procs = []
        print("2) 10 flows, 1 ms")
        procs += flows(15602, 10, secs + 2)
        st = sample(15602, 0.001, secs)
        print(f"  sampler CPU {st.as_dict()['cpu_fraction']:.1%} of a core, ticks {st.ticks}, "
              f"missed {st.missed} ({st.missed_fraction:.2%}), SCHED_FIFO {st.realtime}, {load()}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
