"""In-guest check of the project's netem backend (run inside vagrant/guest).

    vagrant/guest/run.py -- python3 /project/tests/guest/netem_backend.py

Builds h1 - h2 with ``testbed.up(..., link_backend="netem")``: forward
(h1 -> h2) delay 30 ms + loss 2 % + rate 20 Mbit/s, reverse delay 10 ms.
Checks, then tears down:

- ``tc qdisc show`` lists netem (root, handle 7462:) with the planned delay
  and loss, and tbf (parent 7462:1) with the planned rate, on h1's side;
  netem alone on h2's side;
- ping RTT is about 40 ms (TCG: loose bounds);
- ``backend.change`` of the delay keeps loss and rate (readback again);
- lowering the rate 100 -> 10 Mbit/s gives the tbf a fresh queue, and
  ``live.put`` of a delay alone takes the tbf and the loss away;
- after ``down`` no namespace, no state directory is left.

Prints ``NETEM-BACKEND-RESULT {json}`` and exits 0 only if every check passed.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

IP = "/usr/sbin/ip"
TC = "/usr/sbin/tc"
PING = "/usr/bin/ping"
INSTANCE = "gnetem"

TOPOLOGY = {
    "name": "guest-netem",
    "nodes": {"h1": {"kind": "host"}, "h2": {"kind": "host"}},
    "links": [{"endpoints": ["h1", "h2"],
               "forward": {"delay": "30ms", "loss": "2%", "rate": "20mbit"},
               "reverse": {"delay": "10ms"}}],
}


def tc_show(netns: str, ifname: str) -> str:
    return subprocess.run([IP, "netns", "exec", netns, TC, "qdisc", "show", "dev", ifname],
                          capture_output=True, text=True, check=True).stdout


def ping(netns: str, addr: str, count: int, interval: float) -> list[float]:
    out = subprocess.run([IP, "netns", "exec", netns, PING, "-n", "-c", str(count), "-i",
                          str(interval), "-W", "2", addr],
                         capture_output=True, text=True).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def main() -> int:
    t0 = time.monotonic()
    import testbed
    from testbed.model.document import Document
    from testbed.model.impairment import parse_impairment
    from testbed.model.topology import parse_topology
    from testbed.kernel import netns as tb_netns
    from testbed.realize import state

    result: dict = {"import_s": round(time.monotonic() - t0, 1)}
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    topo = parse_topology(Document(file="<guest>", data=TOPOLOGY))
    t1 = time.monotonic()
    net = testbed.up(topo, name=INSTANCE, link_backend="netem")
    try:
        result["up_s"] = round(time.monotonic() - t1, 1)
        result["backend"] = net.link_backend
        expect(net.link_backend == "netem", f"backend in force is {net.link_backend}")
        link = net.links[0]
        h1, h2 = net["h1"], net["h2"]
        fwd = tc_show(h1.netns, link.a_ifname)
        rev = tc_show(h2.netns, link.b_ifname)
        result["qdisc_forward"], result["qdisc_reverse"] = fwd, rev
        expect(re.search(r"qdisc netem 7462: root .*delay 30ms", fwd) is not None,
               f"forward netem with delay 30ms not listed: {fwd!r}")
        expect(re.search(r"qdisc netem 7462: root .*loss 2%", fwd) is not None,
               f"forward netem loss 2% not listed: {fwd!r}")
        expect(re.search(r"qdisc tbf 7463: parent 7462:1 rate 20Mbit", fwd) is not None,
               f"forward tbf 20Mbit under netem not listed: {fwd!r}")
        expect(re.search(r"qdisc netem 7462: root .*delay 10ms", rev) is not None,
               f"reverse netem delay 10ms not listed: {rev!r}")
        expect("tbf" not in rev and "loss" not in rev, f"reverse has more than delay: {rev!r}")

        shown = net_backend_show(net, "h1", link.a_ifname)
        result["show_forward"] = shown
        expect(shown["qdiscs"].get("netem", {}).get("delay_ns") == 30_000_000,
               f"backend.show forward: {shown}")

        ping(h1.netns, h2.ipv4, 3, 0.2)  # ARP, caches
        rtts = ping(h1.netns, h2.ipv4, 20, 0.1)
        result["rtt_ms"] = rtts
        med = statistics.median(rtts) if rtts else None
        result["rtt_median_ms"] = med
        # 30 + 10 ms configured; 2 % loss may drop a few pings.
        expect(len(rtts) >= 14, f"only {len(rtts)} of 20 pings came back (2 % loss)")
        expect(med is not None and 38 <= med <= 120, f"median RTT {med} ms, expected ~40")

        # change the delay only: loss and rate must stay
        from testbed.emulation import NetemBackend
        tag = next(e.tag for e in net.deployed.emulated if e.sender == "h1")
        merged = NetemBackend().change(h1.netns, link.a_ifname,
                                       parse_impairment({"delay": "50ms"}, file=None,
                                                        path="change", partial=True),
                                       owner_tag=tag, state_dir=net.state_dir)
        result["merged"] = str(merged)
        fwd2 = tc_show(h1.netns, link.a_ifname)
        result["qdisc_forward_changed"] = fwd2
        expect(re.search(r"netem 7462: root .*delay 50ms.*loss 2%", fwd2) is not None,
               f"after change: {fwd2!r}")
        expect("tbf 7463: parent 7462:1 rate 20Mbit" in fwd2, f"tbf lost by change: {fwd2!r}")
        ping(h1.netns, h2.ipv4, 2, 0.2)
        rtts2 = ping(h1.netns, h2.ipv4, 10, 0.1)
        med2 = statistics.median(rtts2) if rtts2 else None
        result["rtt_median_changed_ms"] = med2
        expect(med2 is not None and 58 <= med2 <= 150, f"median RTT after change {med2} ms, ~60")

        # the rate lowered 100 -> 10 Mbit/s: the tbf's burst shrinks, so it gets a fresh
        # queue (packets queued under the old burst could never leave); then put back
        # exactly a delay: the tbf goes
        from testbed.emulation import live
        live.change(INSTANCE, "h1-h2", live.parse_settings(["rate=100mbit"]), "forward",
                    notes=[])
        live.change(INSTANCE, "h1-h2", live.parse_settings(["rate=10mbit"]), "forward",
                    notes=[])
        fwd3 = tc_show(h1.netns, link.a_ifname)
        result["qdisc_forward_rate_lowered"] = fwd3
        expect(re.search(r"tbf 7463: parent 7462:1 rate 10Mbit", fwd3) is not None
               and re.search(r"bfifo 746[45]: parent 7463:1", fwd3) is not None,
               f"after lowering the rate, no fresh queue under the tbf: {fwd3!r}")
        (fwd_dir,) = live.directions(net.deployed, "h1-h2", "forward")
        live.put(INSTANCE, [(fwd_dir, parse_impairment({"delay": "30ms"}, file=None,
                                                       path="put"))], notes=[])
        fwd4 = tc_show(h1.netns, link.a_ifname)
        result["qdisc_forward_put"] = fwd4
        expect(re.search(r"netem 7462: root .*delay 30ms", fwd4) is not None
               and "tbf" not in fwd4 and "loss" not in fwd4,
               f"after putting back delay 30ms alone: {fwd4!r}")
    finally:
        net.down()
    left = [n for n in tb_netns.list_names() if n.startswith(f"tb-{INSTANCE}-")]
    if state.instance_dir(INSTANCE).exists():
        left.append(str(state.instance_dir(INSTANCE)))
    result["left_behind"] = left
    expect(not left, f"left behind after down: {left}")
    result["total_s"] = round(time.monotonic() - t0, 1)
    result["problems"] = problems
    print("NETEM-BACKEND-RESULT " + json.dumps(result), flush=True)
    return 1 if problems else 0


def net_backend_show(net, node: str, ifname: str) -> dict:
    from testbed.emulation import NetemBackend
    entry = next(e for e in net.deployed.emulated if e.sender == node and e.ifname == ifname)
    return NetemBackend().show(net[node].netns, ifname, owner_tag=entry.tag,
                               state_dir=net.state_dir)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
