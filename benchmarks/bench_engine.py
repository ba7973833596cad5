"""The link engine against the per-direction delay daemons it replaced, side by side.

GitHub issue 11. Builds a line of N routers with a host at each end and a delay
on EVERY link (N+1 links, 2(N+1) emulated directions), with the userspace
backend, through the CLI as a user would, and measures:

- ``up``: wall time of ``testbed up`` (its own process);
- RSS: the summed resident set of the emulation processes (the engine, or every
  delay daemon), read from /proc after ``up``;
- RTT: ``ping -c 200 -i 0.01`` h1 -> h2 (mean, p50, p99), against the configured
  2(N+1) x delay and against the same line without delay (the veths' own RTT),
  giving the error per pass (one pass = one delayed direction crossed);
- ``down``: wall time of ``testbed down``;
- with ``--flow``: the RTT again while a saturating TCP flow (iperf3 h1 -> h2)
  runs through the same line and engine (rows ``... + TCP flow``).

"daemons" runs another checkout's code (``--old /work/main``: the per-direction
daemons); "engine" runs this one; "netem" runs this one with the kernel's netem
(``--link-backend netem``: only where the kernel has sch_netem). ``--guest``
runs the netem rows in the QEMU guest (vagrant/guest: a Debian kernel with
netem, TCG-emulated on machines without KVM, so its times are the emulator's:
compare its error per pass, which subtracts the same guest's undelayed line).
Lines longer than 253 routers cannot ping end to end (TTL max 255): RTT is
measured only where the ends can reach each other.

Run as root:  python benchmarks/bench_engine.py --old /work/main
              [--scenarios 30,250,1000] [--codes daemons,engine,netem] [--guest]
              [--flow] [--json out.json]
Prints a table with engine/daemons ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = """variables: {routers: 30, delay: 1ms}
---
name: benchline
nodes:
  h1: {kind: host}
  h2: {kind: host}
{% for i in range(1, routers + 1) %}
  r{{ i }}: {kind: router}
{% endfor %}
addressing:
  ipv4: 10.0.0.0/12
links:
  - endpoints: [h1, r1]
{% if delay %}    delay: {{ delay }}
{% endif %}
{% for i in range(1, routers) %}
  - endpoints: [r{{ i }}, r{{ i + 1 }}]
{% if delay %}    delay: {{ delay }}
{% endif %}
{% endfor %}
  - endpoints: [r{{ routers }}, h2]
{% if delay %}    delay: {{ delay }}
{% endif %}
"""
EMULATION_MODULES = ("testbed.emulation.engine", "testbed.emulation.delayd")


def cli(code: Path, *args: str, timeout: float = 900) -> tuple[float, subprocess.CompletedProcess]:
    # the code first; what else was on the path stays (the guest's /site-packages)
    path = [str(code)] + [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    env = {**os.environ, "PYTHONPATH": ":".join(path)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd="/")
    return time.monotonic() - started, proc


def emulation_rss_mb(name: str) -> tuple[int, float]:
    """(count, summed VmRSS in MB) of the engine/daemon processes inside instance
    ``name``'s namespaces (where both run)."""
    spaces = {f"net:[{os.stat(p).st_ino}]" for p in Path("/run/netns").glob(f"tb-{name}-*")}
    count, total = 0, 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/net") not in spaces:
                continue
            args = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            if not any(a.decode(errors="replace") in EMULATION_MODULES for a in args):
                continue
            status = Path(f"/proc/{entry.name}/status").read_text()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        if found:
            count += 1
            total += int(found.group(1))
    return count, total / 1024


def ping(code: Path, name: str, count: int = 200) -> list[float]:
    _t, proc = cli(code, "exec", "--name", name, "h1", "--", "ping", "-n", "-c", str(count),
                   "-i", "0.01", "-W", "2", "h2")
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", proc.stdout)]


def ping_under_flow(code: Path, name: str) -> tuple[list[float], float | None]:
    """``ping`` while iperf3 h1 -> h2 saturates the line: (RTTs, the flow's bit/s)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    tb = [sys.executable, "-m", "testbed", "exec", "--name", name]
    server = subprocess.Popen([*tb, "h2", "--", "iperf3", "-s", "-1", "-p", "5299"], env=env,
                              cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        client = subprocess.Popen([*tb, "h1", "--", "iperf3", "-c", "h2", "-p", "5299", "-t", "8",
                                   "-J"], env=env, cwd="/", stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        time.sleep(3.0)   # past slow start
        rtts = ping(code, name)
        out, _ = client.communicate(timeout=60)
        try:
            bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError):
            bps = None
        return rtts, bps
    finally:
        server.kill()
        server.wait()


def stats(rtts: list[float]) -> dict | None:
    if not rtts:
        return None
    s = sorted(rtts)
    return {"n": len(s), "mean": statistics.mean(s), "p50": s[len(s) // 2],
            "p99": s[min(len(s) - 1, int(len(s) * 0.99))]}


def one(code: Path, routers: int, delay: str | None, topo: Path, measure_rtt: bool,
        backend: str = "userspace", flow: bool = False) -> dict:
    name = f"lb{secrets.token_hex(3)}"
    args = ["up", str(topo), "--name", name, "--link-backend", backend,
            "--set", f"routers={routers}", "--set", f"delay={delay or 'null'}"]
    up_s, proc = cli(code, *args)
    out: dict = {"up_s": up_s, "load": os.getloadavg()[0]}
    try:
        if proc.returncode != 0:
            out["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
            return out
        out["processes"], out["rss_mb"] = emulation_rss_mb(name)
        if measure_rtt:
            out["rtt_ms"] = stats(ping(code, name))
        if measure_rtt and flow:
            rtts, bps = ping_under_flow(code, name)
            out["flow"] = {"rtt_ms": stats(rtts), "gbps": None if bps is None else bps / 1e9,
                           "load": os.getloadavg()[0]}
    finally:
        out["down_s"], _ = cli(code, "down", "--name", name)
    return out


def scenario(codes: dict[str, Path], routers: int, delay_ms: float, topo: Path,
             flow: bool = False) -> dict:
    reachable = routers <= 253
    result: dict = {"routers": routers, "directions": 2 * (routers + 1),
                    "configured_rtt_ms": 2 * (routers + 1) * delay_ms}
    if reachable:
        base = one(codes.get("engine") or next(iter(codes.values())), routers, None, topo, True)
        result["base_rtt_ms"] = base.get("rtt_ms")
    for label, code in codes.items():
        r = one(code, routers, f"{delay_ms:g}ms", topo, reachable,
                BACKENDS.get(label, "userspace"), flow)
        for got in (r, r.get("flow") or {}):
            per_pass(got, result)
        result[label] = r
        if r.get("flow"):
            result[f"{label}+flow"] = {**r, **r["flow"]}
        print(json.dumps({label: r}), file=sys.stderr)
    return result


def per_pass(r: dict, result: dict) -> None:
    """The error per pass (against the configured delay and the undelayed line's p50)."""
    rtt, base_rtt = r.get("rtt_ms"), result.get("base_rtt_ms")
    if rtt and base_rtt:
        passes = result["directions"]
        r["error_per_pass_us"] = {k: (rtt[k] - base_rtt["p50"] - result["configured_rtt_ms"])
                                  / passes * 1e3 for k in ("mean", "p50", "p99")}
        r["rtt_vs_configured"] = rtt["mean"] / result["configured_rtt_ms"]


def table(results: list[dict]) -> str:
    lines = ["| routers | code | up s | down s | procs | RSS MB | RTT mean/p99 ms (configured) "
             "| error/pass mean, p99 us | load |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        base = res.get("base_rtt_ms")
        if base:
            lines.append(f"| {res['routers']} | no delay (floor) | | | | | "
                         f"{base['mean']:.2f}/{base['p99']:.2f} (0) | | |")
        for label in ("daemons", "daemons+flow", "engine", "engine+flow", "netem",
                      "netem+flow"):
            r = res.get(label)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {res['routers']} | {label} | failed: {r['error']} |||||||")
                continue
            rtt, err = r.get("rtt_ms"), r.get("error_per_pass_us")
            if label.endswith("+flow") and r.get("gbps"):
                label = f"{label[:-5]} + TCP flow at {r['gbps']:.2f} Gbit/s"
            lines.append(
                f"| {res['routers']} | {label} | {r['up_s']:.2f} | {r['down_s']:.2f} | "
                f"{r['processes']} | {r['rss_mb']:.0f} | "
                + (f"{rtt['mean']:.2f}/{rtt['p99']:.2f} ({res['configured_rtt_ms']:g})"
                   if rtt else "n/a (TTL)") + " | "
                + (f"{err['mean']:.0f}, {err['p99']:.0f}" if err else "") + f" | {r['load']:.1f} |")
        d, e = res.get("daemons"), res.get("engine")
        if d and e and "error" not in d and "error" not in e:
            lines.append(f"| {res['routers']} | engine/daemons | {e['up_s'] / d['up_s']:.3f} | "
                         f"{e['down_s'] / d['down_s']:.2f} | | {e['rss_mb'] / d['rss_mb']:.3f} "
                         "| | | |")
    return "\n".join(lines)


BACKENDS = {"netem": "netem"}     # which --link-backend a code's rows use (else userspace)


def netem_in_guest(scenarios: str, delay_ms: float, tmp: Path) -> list[dict]:
    """The netem rows, measured by this script run inside the QEMU guest."""
    out = tmp / "guest-out"
    out.mkdir()
    argv = [sys.executable, str(REPO / "vagrant" / "guest" / "run.py"), "--out", str(out),
            "--memory", "2048", "--smp", "2", "--timeout", "3000", "--",
            "python3", "/project/benchmarks/bench_engine.py", "--codes", "netem",
            "--scenarios", scenarios, "--delay-ms", f"{delay_ms:g}", "--json", "/out/netem.json"]
    proc = subprocess.run(argv, text=True, capture_output=True)
    if proc.returncode != 0:
        tail = " / ".join(proc.stdout.strip().splitlines()[-3:])
        return [{"routers": int(r), "netem": {"error": f"guest exit {proc.returncode}: {tail}"}}
                for r in scenarios.split(",")]
    return json.loads((out / "netem.json").read_text())


def merge_guest(results: list[dict], guest: list[dict]) -> None:
    """The guest's netem row (with the guest's own undelayed RTT) beside the host's rows."""
    for res, g in zip(results, guest):
        netem = g.get("netem")
        if netem is not None:
            netem["base_rtt_ms"] = g.get("base_rtt_ms")
            res["netem"] = netem
            res.setdefault("configured_rtt_ms", g.get("configured_rtt_ms"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=None,
                        help="a checkout with the per-direction daemons (e.g. /work/main)")
    parser.add_argument("--scenarios", default="30,250,1000", help="routers per line")
    parser.add_argument("--codes", default="daemons,engine")
    parser.add_argument("--guest", action="store_true",
                        help="run the netem rows in the QEMU guest (vagrant/guest)")
    parser.add_argument("--delay-ms", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--flow", action="store_true",
                        help="also measure the RTT under a saturating TCP flow")
    args = parser.parse_args()
    codes = {"daemons": args.old, "engine": REPO, "netem": REPO}
    codes = {k: v for k, v in codes.items() if k in args.codes.split(",") and v is not None}
    in_guest = args.guest and codes.pop("netem", None) is not None
    with tempfile.TemporaryDirectory(prefix="tbbench-engine-") as tmp:
        topo = Path(tmp) / "line.yaml"
        topo.write_text(LINE)
        results = []
        for routers in (int(x) for x in args.scenarios.split(",")):
            # the daemons refuse ~150 routers and more (memory): not tried there
            use = {k: v for k, v in codes.items() if k != "daemons" or routers <= 60}
            results.append(scenario(use, routers, args.delay_ms, topo, args.flow) if use
                           else {"routers": routers})
        if in_guest:
            merge_guest(results, netem_in_guest(args.scenarios, args.delay_ms, Path(tmp)))
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
