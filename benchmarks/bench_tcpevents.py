"""Benchmark the tcp events collector against the tcp_info sampler (not a test; run as root).

Ten bulk TCP flows (iperf3 -P 10) through a veth between two namespaces, no
delay, no rate limit: the host's CPU is the bottleneck, so whatever the
collectors cost shows up both as CPU and as lost goodput. Scenarios, each run
``--runs`` times, interleaved:
  none      no collector;
  tcpinfo   the tcp_info sampler every 1 ms (collect/tcpinfo);
  tcpevents the tcp tracepoints into a trace instance of our own (collect/tcpevents).
Per scenario (medians): goodput, host CPU busy (cores, /proc/stat), CPU of this
process (/proc/self/stat: the collector's thread and nothing else that is
busy), the collector thread's own CPU, iperf3's CPU per Gbit (the kernel's
packet path, tracepoints included, runs mostly in its context), what the trace instance recorded
(events, bytes, overrun/dropped from per_cpu/cpuN/stats), and the CPU it took
to decode afterwards. Ratios are against ``none``.

    python benchmarks/bench_tcpevents.py [--seconds 5] [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.collect import tcpevents, tcpevents_parse, tcpinfo  # noqa: E402
from testbed.kernel import netns, tracefs  # noqa: E402

TAG = f"ev{os.getpid() % 100000}b"
NS_A, NS_B = f"{TAG}a", f"{TAG}b"
PORT = 45201
SPOOL_DIR = os.environ.get("SPOOL_DIR")  # e.g. /dev/shm, to take the disk out of the picture


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def make_pair() -> None:
    ip("netns", "add", NS_A)
    ip("netns", "add", NS_B)
    ip("link", "add", f"{TAG}0", "netns", NS_A, "type", "veth", "peer", "name", f"{TAG}1",
       "netns", NS_B)
    for ns, dev, addr in ((NS_A, f"{TAG}0", "10.78.0.1/24"), (NS_B, f"{TAG}1", "10.78.0.2/24")):
        ip("-n", ns, "addr", "add", addr, "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
        ip("-n", ns, "link", "set", "lo", "up")


def remove_pair() -> None:
    for ns in (NS_A, NS_B):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def host_busy() -> float:
    """Busy CPU seconds of the whole host so far (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    parts = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def flows(seconds: float, n: int) -> float:
    """Run n bulk flows for ``seconds``; goodput (bit/s) at the receiver."""
    server = subprocess.Popen(["ip", "netns", "exec", NS_B, "iperf3", "-s", "-1", "-p", str(PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = subprocess.run(["ip", "netns", "exec", NS_A, "iperf3", "-c", "10.78.0.2", "-p",
                              str(PORT), "-P", str(n), "-t", f"{seconds:g}", "-J"],
                             check=True, capture_output=True, text=True, timeout=seconds + 30)
    finally:
        server.wait(timeout=10)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]


def run_once(kind: str, seconds: float, n: int, tmp: Path) -> dict[str, Any]:
    collector: Any = None
    spool = tmp / f"{kind}.spool"
    t0 = time.monotonic()
    if kind == "tcpinfo":
        with netns.enter(NS_A):
            sock = tcpinfo.open_diag_socket()
        collector = tcpinfo.TcpInfoSampler([("a", sock)], spool, interval=0.001,
                                           ports=frozenset({PORT}))
    elif kind == "tcpevents":
        size = tcpevents.buffer_kb(100_000, seconds)
        collector = tcpevents.TcpEventsCollector(tmp / "journal", f"{tracefs.PREFIX}{TAG}.bench",
                                                 frozenset({PORT}), spool, buffer_kb=size)
    busy0, self0, flows0 = host_busy(), self_cpu(), children_cpu()
    wall0 = time.monotonic()
    if collector:
        collector.start()
    try:
        goodput = flows(seconds, n)
    finally:
        stats = collector.stop() if collector else None
    wall = time.monotonic() - wall0
    out = {"goodput_bps": goodput, "host_busy_cores": (host_busy() - busy0) / wall,
           "self_cpu_cores": (self_cpu() - self0) / wall,
           # iperf3's own CPU (user + system, the packet path and the tracepoints it runs
           # included) per Gbit moved: less sensitive to other load than goodput is
           "flows_cpu_s_per_gbit": (children_cpu() - flows0) / (goodput * seconds / 1e9),
           "wall_s": wall}
    if stats is not None:
        out["collector_cpu_cores"] = stats.cpu_seconds / max(stats.wall_seconds, 1e-9)
        out["spool_bytes"] = spool.stat().st_size
        out.update(decode(kind, spool, t0, stats))
    return out


def decode(kind: str, spool: Path, t0: float, stats: Any) -> dict[str, Any]:
    cpu0 = time.process_time()
    if kind == "tcpinfo":
        rows = tcpinfo.decode_spool(spool.read_bytes(), ["a"], t0)
        extra = {"missed_fraction": stats.missed_fraction}
    else:
        decoded = tcpevents_parse.decode_spool(spool.read_bytes(), t0)
        rows = decoded.rows
        extra = {"overrun": stats.total("overrun"), "dropped": stats.total("dropped"),
                 "lost_in_pages": decoded.lost, "buffer_kb": stats.buffer_kb,
                 "events": {e: sum(1 for r in rows if r["event"] == e)
                            for e in ("probe", "cong_state_set", "retransmit_skb")}}
    spent = time.process_time() - cpu0
    return {"rows": len(rows), "decode_cpu_s": spent,
            "decode_us_per_row": 1e6 * spent / max(len(rows), 1), **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flows", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kinds = ("none", "tcpinfo", "tcpevents")
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    make_pair()
    try:
        with tempfile.TemporaryDirectory(dir=SPOOL_DIR) as tmp:
            for run in range(args.runs):
                for kind in kinds:
                    results[kind].append(run_once(kind, args.seconds, args.flows, Path(tmp)))
                    print(f"run {run} {kind}: {json.dumps(results[kind][-1])}", flush=True)
    finally:
        remove_pair()
    summary = summarize(results)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "summary": summary}, indent=1))


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    med = {k: {m: statistics.median(r[m] for r in runs) for m in runs[0]
               if isinstance(runs[0][m], (int, float))} for k, runs in results.items()}
    base = med["none"]
    for kind in ("tcpinfo", "tcpevents"):
        m = med[kind]
        m["goodput_ratio"] = m["goodput_bps"] / base["goodput_bps"]
        # host CPU per bit moved, against no collector: what the collector costs the
        # kernel and us together, independent of the goodput it took away
        m["host_cpu_per_bit_ratio"] = ((m["host_busy_cores"] / m["goodput_bps"])
                                       / (base["host_busy_cores"] / base["goodput_bps"]))
        m["flows_cpu_per_bit_ratio"] = m["flows_cpu_s_per_gbit"] / base["flows_cpu_s_per_gbit"]
    ev, ti = med["tcpevents"], med["tcpinfo"]
    med["tcpevents_vs_tcpinfo"] = {
        "collector_cpu": ev["collector_cpu_cores"] / max(ti["collector_cpu_cores"], 1e-9),
        "goodput": ev["goodput_bps"] / ti["goodput_bps"],
        "host_cpu_per_bit": ev["host_cpu_per_bit_ratio"] / ti["host_cpu_per_bit_ratio"],
        "flows_cpu_per_bit": ev["flows_cpu_per_bit_ratio"] / ti["flows_cpu_per_bit_ratio"]}
    return med


if __name__ == "__main__":
    main()
