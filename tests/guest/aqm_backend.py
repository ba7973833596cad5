"""In-guest check of the kernel AQMs under the netem backend's tbf (run inside vagrant/guest).

    vagrant/guest/run.py -- python3 /project/tests/guest/aqm_backend.py

Builds h1 - h2 with ``testbed.up(..., link_backend="netem")``: forward
(h1 -> h2) rate 10 Mbit/s, delay 10 ms, a buffer of 8 BDP, an AQM; reverse
delay 10 ms; both hosts ECN-capable (net.ipv4.tcp_ecn=1). For codel, fq_codel
with ``ecn``, pie, and red with ``ecn`` (``CASES``), set by ``link set`` (so
the discipline also changes kind in place):

- ``tc -d qdisc show`` lists the AQM as handle 7466: under tbf 7463:1 with
  the planned parameters (red: tc's own reading of Wlog, probability,
  Scell_log);
- a bulk TCP flow (iperf3, CUBIC) through it moves the AQM's counters:
  drops without ecn, CE marks (and next to no drops) with it.

Then live changes keep the AQM: new parameters (codel target 2 ms), the
rate lowered (tbf's burst shrinks: its queue is replaced) and raised (red's
idle table follows the rate). After ``down`` no namespace, no state
directory is left.

Prints ``AQM-BACKEND-RESULT {json}`` and exits 0 only if every check passed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

IP = "/usr/sbin/ip"
TC = "/usr/sbin/tc"
IPERF3 = "/usr/bin/iperf3"
INSTANCE = "gaqm"
FLOW_S = 4
# each discipline once, ECN on for every other one (both the drop and the mark path of
# the qdiscs; all eight cases took twice as long in CI)
CASES = [("codel", False), ("fq_codel", True), ("pie", False), ("red", True)]

TOPOLOGY = {
    "name": "guest-aqm",
    "defaults": {"cc": "cubic", "sysctls": {"net.ipv4.tcp_ecn": 1}},
    "nodes": {"h1": {"kind": "host"}, "h2": {"kind": "host"}},
    "links": [{"endpoints": ["h1", "h2"],
               "forward": {"rate": "10mbit", "delay": "10ms", "queue": "8bdp", "aqm": "codel"},
               "reverse": {"delay": "10ms"}}],
}
# what `tc -d qdisc show` prints for each kind (tc 6.1), given the plan's numbers
SHOWN = {
    "codel": r"qdisc codel 7466: parent 7463:1 limit 1000p target 5ms interval 100ms",
    "fq_codel": r"qdisc fq_codel 7466: parent 7463:1 limit 10240p flows 1024 quantum \d+ "
                r"target 5ms interval 100ms",
    # the kernel keeps tupdate in jiffies: 15 ms is 16 ms at HZ=250 (Debian's)
    "pie": r"qdisc pie 7466: parent 7463:1 limit 1000p target 15ms tupdate 1[56]ms",
    "red": r"qdisc red 7466: parent 7463:1 limit (?P<limit>\d+)b min (?P<min>\d+)b "
           r"max (?P<max>\d+)b",
}
RED_DETAIL = r"ewma 9 probability 0\.02 Scell_log \d+"


def sh(netns: str, *argv: str, check: bool = True) -> str:
    return subprocess.run([IP, "netns", "exec", netns, *argv], capture_output=True, text=True,
                          check=check).stdout


def qdiscs(netns: str, ifname: str) -> list[dict]:
    return json.loads(sh(netns, TC, "-s", "-d", "-j", "qdisc", "show", "dev", ifname))


def counters(netns: str, ifname: str) -> dict:
    """The AQM's drops and CE marks: tc -j prints a kind's xstats next to the common
    stats (codel, fq_codel, pie: ``ecn_mark``; red: ``marked``)."""
    aqm = next(q for q in qdiscs(netns, ifname) if q.get("handle") == "7466:")
    stats = {**aqm, **aqm.get("xstats", {})}
    return {"kind": aqm["kind"], "drops": stats.get("drops", 0),
            "marks": stats.get("ecn_mark", stats.get("marked", 0)),
            "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))}}


def bulk_flow(client_ns: str, server_addr: str) -> float:
    """One CUBIC flow for FLOW_S seconds; its goodput in Mbit/s."""
    out = sh(client_ns, IPERF3, "-c", server_addr, "-t", str(FLOW_S), "-J", "-C", "cubic")
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def main() -> int:
    t0 = time.monotonic()
    import testbed
    from testbed.emulation import live
    from testbed.kernel import netns as tb_netns
    from testbed.model.document import Document
    from testbed.model.topology import parse_topology
    from testbed.realize import state

    result: dict = {"cases": {}}
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    topo = parse_topology(Document(file="<guest>", data=TOPOLOGY))
    net = testbed.up(topo, name=INSTANCE, link_backend="netem")
    try:
        result["up_s"] = round(time.monotonic() - t0, 1)
        h1, h2 = net["h1"], net["h2"]
        ifname = net.links[0].a_ifname
        server = subprocess.Popen([IP, "netns", "exec", h2.netns, IPERF3, "-s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            for kind, ecn in CASES:
                live.change(INSTANCE, "h1-h2", live.parse_settings(
                    {"aqm": kind, "ecn": "on" if ecn else "off"}), "forward", notes=[])
                name = f"{kind}{'+ecn' if ecn else ''}"
                result["cases"][name] = one_case(h1.netns, h2.ipv4, ifname, kind, ecn, expect)
            result["live"] = live_changes(INSTANCE, h1.netns, ifname, expect)
        finally:
            server.terminate()
            server.wait()
    finally:
        net.down()
    left = [n for n in tb_netns.list_names() if n.startswith(f"tb-{INSTANCE}-")]
    if state.instance_dir(INSTANCE).exists():
        left.append(str(state.instance_dir(INSTANCE)))
    result["left_behind"] = left
    expect(not left, f"left behind after down: {left}")
    result["total_s"] = round(time.monotonic() - t0, 1)
    result["problems"] = problems
    print("AQM-BACKEND-RESULT " + json.dumps(result), flush=True)
    return 1 if problems else 0


def one_case(netns: str, server_addr: str, ifname: str, kind: str, ecn: bool, expect) -> dict:
    """Readback of the AQM under tbf, then a bulk flow: which counter moved."""
    name = f"{kind}{'+ecn' if ecn else ''}"
    shown = sh(netns, TC, "-d", "qdisc", "show", "dev", ifname)
    match = re.search(SHOWN[kind], shown)
    expect(match is not None, f"{name}: not listed under tbf as planned: {shown!r}")
    expect(("ecn" in shown.split(f"qdisc {kind} 7466:")[-1].split("\n")[0]) == ecn,
           f"{name}: ecn flag shown wrong: {shown!r}")
    if kind == "red" and match is not None:
        limit, qmin, qmax = (int(match[k]) for k in ("limit", "min", "max"))
        expect((qmin, qmax) == (limit // 12, limit // 4), f"red thresholds: {shown!r}")
        expect(re.search(RED_DETAIL, shown) is not None, f"red's ewma/probability: {shown!r}")
    before = counters(netns, ifname)
    goodput = bulk_flow(netns, server_addr)
    after = counters(netns, ifname)
    drops, marks = after["drops"] - before["drops"], after["marks"] - before["marks"]
    if ecn:
        expect(marks > 0 and drops <= marks / 4, f"{name}: marks {marks}, drops {drops}")
    else:
        expect(drops > 0 and marks == 0, f"{name}: drops {drops}, marks {marks}")
    expect(goodput > 5, f"{name}: goodput {goodput:.1f} Mbit/s at 10 Mbit/s")
    return {"shown": shown, "goodput_mbps": round(goodput, 2), "drops": drops, "marks": marks,
            "stats": after["stats"]}


def live_changes(instance: str, netns: str, ifname: str, expect) -> dict:
    """Parameters, then the rate down and up: the AQM stays, with what was asked."""
    from testbed.emulation import live

    out = {}
    steps = [("codel target 2ms", {"aqm": {"kind": "codel", "target": "2ms"}},
              r"qdisc codel 7466: parent 7463:1 limit 1000p target 2ms interval 100ms ecn"),
             ("rate 5mbit", {"rate": "5mbit"},
              r"qdisc codel 7466: parent 7463:1 limit 1000p target 2ms interval 100ms ecn"),
             ("red, rate 20mbit", {"aqm": "red", "rate": "20mbit"},
              r"qdisc red 7466: parent 7463:1 .* ecn"),
             ("rate 5mbit again", {"rate": "5mbit"}, r"qdisc red 7466: parent 7463:1 .* ecn")]
    for what, settings, pattern in steps:
        notes: list[str] = []
        live.change(instance, "h1-h2", live.parse_settings(settings), "forward", notes=notes)
        shown = sh(netns, TC, "-d", "qdisc", "show", "dev", ifname)
        out[what] = {"shown": shown, "notes": notes}
        expect(re.search(pattern, shown) is not None, f"after {what}: {shown!r}")
        rate = settings.get("rate")
        expect(rate is None or f"rate {rate[:-4]}Mbit" in shown, f"tbf rate {rate}: {shown!r}")
        if "red" in pattern and rate is not None:
            want = red_scell_log(int(rate[:-4]) * 125_000)
            expect(re.search(rf"Scell_log {want}\b", shown) is not None,
                   f"red's idle table not for {rate} (Scell_log {want}): {shown!r}")
    return out


def red_scell_log(rate_bytes: int) -> int:
    """The Scell_log tc computes for testbed's red at this rate (full-size packets)."""
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec
    from testbed.kernel import red

    return red.eval_idle_damping(red.WLOG, 1514, rate_bytes, tick_in_usec)[0]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
