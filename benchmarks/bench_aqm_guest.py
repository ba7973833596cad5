"""The bufferbloat target of issue 11, from the kernel's qdiscs (QEMU guest) and the link engine.

One CUBIC flow through a bottleneck with 40 ms of base RTT and a buffer of 8 BDP
(workloads/bufferbloat.yaml: h1 - r1 = r2 - h2), for aqm fifo, codel and fq_codel,
without and with ECN (the hosts' net.ipv4.tcp_ecn=1 and the AQM's ``ecn``), run
the way a user runs it:

- kernel: ``testbed run --kernel 6.1``: Debian's 6.1 kernel booted under QEMU
  (TCG here: no KVM), the netem backend, the AQM a kernel qdisc under tbf;
- engine: ``testbed run --link-backend userspace`` on this host: the link engine
  is the bottleneck (a discipline it lacks is refused, and listed so).

TCG runs the guest ~10x slower than the host, so the default rate is 10 Mbit/s
(the issue's target is stated at 50 Mbit/s) and the run's own collectors are
thinned (tcp_info every 100 ms, no pcap, no kernel TCP events; the workload's
text is changed only there) so that they do not starve the flow.

Per run: goodput (and its ratio to fifo's, same place, ECN off), the sender's
srtt p50/p90 (tcp_info), retransmits, the bottleneck's own drop and CE-mark
counters (the engine's, or the kernel qdisc's as the run recorded them), and
tcp_info's delivered_ce (packets acknowledged with ECE: classic ECN echoes ECE
until the sender's CWR, so it counts many more packets than were marked).

Run as root:  python benchmarks/bench_aqm_guest.py [--rate 10mbit] [--duration 20s]
              [--where kernel,engine] [--kernel 6.1] [--vcpus 2] [--json out.json]
              [--output DIR (keep the runs)] [--table-from DIR (re-read them)]
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKLOAD = REPO / "workloads" / "bufferbloat.yaml"
SAMPLING = "sampling: {qdisc: 100ms}"
LIGHT = ("sampling: {qdisc: 100ms, tcp_info: 100ms, host: 1s, tcp_events: false}\n"
         "capture: {enabled: false}")
POINTS = [(aqm, ecn) for aqm in ("fifo", "codel", "fq_codel") for ecn in ("off", "on")]


def light_workload(directory: Path) -> Path:
    """bufferbloat.yaml with thinner collectors (the module docstring says why)."""
    text = WORKLOAD.read_text()
    if text.count(SAMPLING) != 1:
        raise SystemExit(f"{WORKLOAD}: expected one line {SAMPLING!r} to thin the collectors")
    path = directory / "bufferbloat.yaml"
    path.write_text(text.replace(SAMPLING, LIGHT))
    return path


def testbed(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "testbed", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd="/")


def run_dirs(stdout: str) -> list[Path]:
    return [Path(line) for line in stdout.splitlines() if line.startswith("/")
            and Path(line, "result.json").exists()]


def variables(args: argparse.Namespace) -> list[str]:
    return ["--set", f"rate={args.rate}", "--set", f"delay={args.delay}",
            "--set", f"duration={args.duration}"]


def run_kernel(workload: Path, args: argparse.Namespace, out: Path) -> list[dict]:
    """Every point in one guest boot."""
    proc = testbed("run", str(workload), "--kernel", args.kernel, "--vcpus", str(args.vcpus),
                   *variables(args), "--output", str(out / "kernel"), "--quiet",
                   timeout=3600)
    found = [figures(d, "kernel") for d in run_dirs(proc.stdout)]
    if not found:
        return [{"where": "kernel", "error": why(proc.stderr)}]
    return found


def run_engine(workload: Path, args: argparse.Namespace, out: Path) -> list[dict]:
    """One point at a time: a discipline the engine lacks fails alone."""
    rows = []
    for aqm, ecn in POINTS:
        proc = testbed("run", str(workload), "--link-backend", "userspace", "--name", args.name,
                       *variables(args), "--set", f"aqm={aqm}", "--set", f'ecn="{ecn}"',
                       "--output", str(out / "engine"), "--quiet", timeout=900)
        dirs = run_dirs(proc.stdout)
        rows.append(figures(dirs[0], "engine") if dirs else
                    {"where": "engine", "aqm": aqm, "ecn": ecn, "error": why(proc.stderr)})
    return rows


def why(stderr: str) -> str:
    """The first reason testbed gave (a refusal lists one per direction)."""
    lines = stderr.strip().splitlines() or ["?"]
    reasons = [l.strip(" -") for l in lines if l.startswith("  - ")]
    return (reasons[0] if reasons else lines[-1])[:160]


def delivered_ce(run: Path) -> int | None:
    """The most CE-marked deliveries the sender's tcp_info reported (it only grows)."""
    with open(run / "tcp_info.csv", newline="") as f:
        seen = [int(r["delivered_ce"]) for r in csv.DictReader(f)
                if r["flow"] == "bulk" and r["delivered_ce"]]
    return max(seen) if seen else None


def queue_counters(manifest: dict) -> dict:
    """The bottleneck's own counters after the run: the engine's drops and marks, or the
    kernel AQM's (handle 7466:; tbf's with a fifo) from the qdisc stats the run recorded."""
    engine = manifest.get("link_engine_after") or {}
    lanes = [lane.get("bottleneck") or {} for lane in engine.get("lanes", {}).values()]
    if any(lanes):
        return {"drops": sum(b.get("aqm_drops", 0) + b.get("tail_drops", 0) for b in lanes),
                "marks": sum(b.get("marks", 0) for b in lanes)}
    qdiscs = [q for node in (manifest.get("nodes_after") or {}).values()
              for q in node.get("qdiscs", [])]
    aqm = [q for q in qdiscs if q.get("handle") == "7466:"]
    chosen = aqm or [q for q in qdiscs if q.get("kind") == "tbf"]
    return {"drops": sum(q.get("drops", 0) for q in chosen),
            "marks": sum(q.get("ecn_mark", q.get("marked", 0)) for q in aqm)}


def figures(run: Path, where: str) -> dict:
    result = json.loads((run / "result.json").read_text())
    flow = result["flows"][0]
    srtt = (flow.get("rtt_ms") or {}).get("srtt") or {}
    ecn = result["variables"]["ecn"]
    return {"where": where, "rate": result["variables"]["rate"],
            "aqm": result["variables"]["aqm"],
            "ecn": ecn if isinstance(ecn, str) else ("on" if ecn else "off"),
            "run": str(run), "goodput_mbps": (flow.get("goodput_bps") or 0) / 1e6,
            "srtt_p50_ms": srtt.get("p50"), "srtt_p90_ms": srtt.get("p90"),
            "retransmits": flow.get("retransmits"), "delivered_ce": delivered_ce(run),
            "queue": queue_counters(json.loads((run / "manifest.json").read_text())),
            "suspect": result["suspect_reasons"]}


def table(rows: list[dict], base_rtt_ms: float) -> str:
    fifo = {r["where"]: r["goodput_mbps"] for r in rows
            if r.get("aqm") == "fifo" and r.get("ecn") == "off" and "error" not in r}
    lines = ["| where | aqm | ecn | goodput Mbit/s | vs fifo | srtt p50 / p90 ms | p50 - base "
             "| retransmits | queue drops / marks | delivered_ce | suspect |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['where']} | {r.get('aqm', '')} | {r.get('ecn', '')} | "
                         f"not run: {r['error']} |||||||")
            continue
        ratio = r["goodput_mbps"] / fifo[r["where"]] if fifo.get(r["where"]) else None
        p50, p90 = r["srtt_p50_ms"], r["srtt_p90_ms"]
        q = r["queue"]
        lines.append(
            f"| {r['where']} | {r['aqm']} | {r['ecn']} | {r['goodput_mbps']:.2f} | "
            f"{'' if ratio is None else f'{ratio:.2f}'} | {p50:.1f} / {p90:.1f} | "
            f"+{p50 - base_rtt_ms:.1f} | {r['retransmits']} | {q['drops']} / {q['marks']} | "
            f"{r['delivered_ce']} | {'; '.join(x.split(':')[0] for x in r['suspect'])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", default="10mbit")
    parser.add_argument("--delay", default="20ms", help="one way, on the bottleneck link")
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--where", default="kernel,engine")
    parser.add_argument("--kernel", default="6.1", help="the guest kernel (testbed kernels)")
    parser.add_argument("--vcpus", type=int, default=2)
    parser.add_argument("--name", default="benchaqm", help="instance name of the engine runs")
    parser.add_argument("--output", type=Path, default=None, help="keep the run directories")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--table-from", type=Path, default=None, metavar="OUTPUT",
                        help="run nothing: the table of the runs kept in OUTPUT (--output)")
    args = parser.parse_args()
    where = args.where.split(",")
    if args.table_from is not None:
        rows = [figures(run, w) for w in where for run in sorted(args.table_from.glob(f"{w}/*/*/"))
                if (run / "result.json").exists()]
    else:
        with tempfile.TemporaryDirectory(prefix="tbbench-aqm-") as tmp:
            workload = light_workload(Path(tmp))
            out = args.output or Path(tmp) / "results"
            rows = (run_kernel(workload, args, out) if "kernel" in where else []) \
                + (run_engine(workload, args, out) if "engine" in where else [])
    base_ms = 2 * float(args.delay.removesuffix("ms"))
    rates = sorted({r["rate"] for r in rows if "rate" in r}) or [args.rate]
    print(f"rate {', '.join(rates)}, base RTT {base_ms:g} ms, buffer 8 BDP")
    print(table(rows, base_ms))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
