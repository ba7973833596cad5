"""In-guest netem self-test: two namespaces, one veth pair, netem delay on one side.

Run inside the guest (run.py -- python3 /project/vagrant/guest/selftest.py).
Prints one line `SELFTEST-RESULT {json}` with what it measured, and exits 0
only if netem is listed by `tc qdisc show` and the RTT is within bounds.

iproute2 is called by absolute path: a busybox `ip`/`tc` applet earlier on
PATH would otherwise be run instead. Stdlib only (guest python3).
"""

import argparse
import json
import re
import subprocess
import sys

IP = "/usr/sbin/ip"
TC = "/usr/sbin/tc"
PING = "/usr/bin/ping"
NS_A, NS_B = "tbg-self-a", "tbg-self-b"
ADDR_A, ADDR_B = "10.213.0.1", "10.213.0.2"


def run(argv, check=True):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"selftest: {' '.join(argv)} exited {r.returncode}: {r.stderr.strip()}")
    return r


def in_ns(ns, *argv):
    return [IP, "netns", "exec", ns, *argv]


def ping_rtts(count, interval):
    out = run(in_ns(NS_A, PING, "-n", "-c", str(count), "-i", str(interval), "-W", "3", ADDR_B)).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--delay-ms", type=float, default=50)
    ap.add_argument("--min-ms", type=float, default=45)
    ap.add_argument("--max-ms", type=float, default=150)
    ap.add_argument("--count", type=int, default=10)
    args = ap.parse_args()
    result = {"delay_ms": args.delay_ms}
    try:
        run([IP, "netns", "add", NS_A])
        run([IP, "netns", "add", NS_B])
        run([IP, "link", "add", "veth-a", "netns", NS_A, "type", "veth", "peer", "name", "veth-b", "netns", NS_B])
        for ns, dev, addr in ((NS_A, "veth-a", ADDR_A), (NS_B, "veth-b", ADDR_B)):
            run(in_ns(ns, IP, "addr", "add", f"{addr}/24", "dev", dev))
            run(in_ns(ns, IP, "link", "set", dev, "up"))
            run(in_ns(ns, IP, "link", "set", "lo", "up"))
        ping_rtts(2, 0.2)  # warm up ARP and the emulated CPU's caches
        base = ping_rtts(args.count, 0.2)
        result["baseline_rtt_ms"] = base
        run(in_ns(NS_A, TC, "qdisc", "add", "dev", "veth-a", "root", "netem", "delay", f"{args.delay_ms:g}ms"))
        qdisc = run(in_ns(NS_A, TC, "qdisc", "show", "dev", "veth-a")).stdout
        result["qdisc"] = qdisc.strip()
        ping_rtts(2, 0.2)
        rtts = ping_rtts(args.count, 0.2)
        result["rtt_ms"] = rtts
        result["rtt_median_ms"] = median(rtts) if rtts else None
        result["kernel"] = run(["/usr/bin/uname", "-r"]).stdout.strip()
    finally:
        run([IP, "netns", "del", NS_A], check=False)  # also removes the veth pair
        run([IP, "netns", "del", NS_B], check=False)
    print("SELFTEST-RESULT " + json.dumps(result), flush=True)
    problems = []
    if "netem" not in result["qdisc"]:
        problems.append(f"netem not in tc qdisc show: {result['qdisc']!r}")
    med = result["rtt_median_ms"]
    if med is None or not args.min_ms <= med <= args.max_ms:
        problems.append(f"median RTT {med} ms outside [{args.min_ms}, {args.max_ms}] ms")
    for p in problems:
        print(f"selftest: FAIL: {p}", flush=True)
    if not problems:
        print(f"selftest: OK: netem delay {args.delay_ms:g} ms -> median RTT {med:.1f} ms "
              f"(baseline {median(result['baseline_rtt_ms']):.2f} ms)", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
