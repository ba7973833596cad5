"""Measure every emulated link of a running testbed and compare with its configuration.

    report = validate(net)            # net: testbed.up(...) or testbed.attach(name)
    print(report.render()); report.ok

Per link (round trip, once): ping -i 0.01 from one end to the other; RTT
mean/p50/p99 against the sum of both directions' delays. Per emulated
direction (sender -> receiver; traffic between the link's two nodes, except
the rate tests of a router's direction, see ``rate_path``):

- loss: numbered UDP datagrams counted at the receiver (one way), with a
  Wilson interval at 99.9 %; flagged if the configured loss lies outside it
  (Gilbert-Elliott loss is correlated: reported, not judged).
- rate (when configured): the on-the-wire rate from the tbf's byte counter
  while iperf3 offers UDP above the rate (frames, as tc counts them; the
  best 0.5 s window, see ``steady_rate``; where the link engine is the
  bottleneck, no tbf: the interface's transmitted bytes, their mean after
  0.5 s, see ``mean_rate``), and
  TCP goodput with iperf3 (expected (mtu-52)/(mtu+14) of the rate; judged
  only on loss-free directions). A router's own sockets sit behind its
  egress delay line, where TCP small queues and the socket buffer cap them
  far below the link rate, so a router's direction is measured with traffic
  between two hosts whose path crosses it and nothing that could lower the
  rate; without such a pair it is measured from the router, not judged. A
  failed or hung iperf3 test is tried again (see ``_iperf3``); one that never
  succeeds is "not measured", never a rate read off an idle link.

Per link, the error per pass: what each delayed direction the round trip
crosses adds beyond its configured delay, (RTT - configured - base) / passes,
``base`` being the RTT over a link of the testbed that nothing emulates (two
veth crossings and the stack, what the link would take undelayed) where there
is one; reported, not judged (the link engine's targets: mean <= 0.05 ms, p99
<= 0.3 ms quiet). Per direction with an ``aqm`` (and a rate): the standing
queue, the RTT a concurrent ping sees while a saturating TCP flow crosses the
direction, minus the quiet RTT of the same path (p50, p90, p99): CoDel and
FQ-CoDel must hold it near their target (p50 within max(3 x target, target +
10 ms)), PIE likewise, a fifo fills its buffer (p50 between half the buffer's
drain time and all of it, plus 5 ms); RED's is reported against its thresholds.

Tolerances (chosen to hold on a loaded 2-core machine with the userspace
backend, and to catch a mis-set link): RTT p50 within max(1 ms, 5 %) and
mean within max(3 ms, 10 %), each plus the configured jitter; wire rate within 5 %; goodput
between 85 % and 105 % of the expected value. A default run takes a few
seconds per link; ``thorough`` sends 100k datagrams per direction and runs
rate tests for 10 s.

The judgements are pure, in ``checks.py``; which way packets go, in ``paths.py``;
this module measures and puts them together.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time
from typing import Any, Callable, Mapping

from testbed.emulation import live
from testbed.kernel.netns import enter
from testbed.errors import TestbedError
from testbed.instance.checks import (Check, DirectionReport, Report, format_bps, goodput_check,
                                     loss_check, mean_rate, per_pass_check, rtt_check,
                                     standing_queue_check, steady_rate, wire_rate_check)
from testbed.instance.network import attach, up
from testbed.instance.paths import node_of, rate_path
from testbed.model.impairment import GilbertElliott, Impairment, round_trip
from testbed.plan.types import PlannedDirection
from testbed.results import percentile
from testbed.signals import stop_signals_raise
from testbed.units import Duration

PROBE_PORT = 47_311
IPERF_PORT = 47_312
IPERF_ATTEMPTS = 6
IPERF_HANG_GRACE = 6.0  # s past a test's end before its client counts as hung


# -- measurements -----------------------------------------------------------
def _address(net, node: str, peer: str, peer_ifname: str) -> str:
    for iface in net[node].interfaces:
        if iface.peer == peer and iface.peer_ifname == peer_ifname:
            for family in (4, 6):
                for addr in iface.addresses:
                    if addr.version == family:
                        return str(addr.ip)
    raise TestbedError(f"node {node} has no address on its link to {peer}")


def _loss_fraction(imp: Impairment) -> float:
    """The random loss of ``imp`` (Gilbert-Elliott counts as lossy: 1.0); 0 if none."""
    if imp.loss is None:
        return 0.0
    if isinstance(imp.loss, GilbertElliott):
        return 1.0
    return imp.loss.fraction


def measure_rtt(net, sender: str, addr: str, count: int) -> tuple[list[float], int]:
    net[sender].run(["ping", "-n", "-q", "-c", "3", "-i", "0.05", "-W", "1", addr], check=False)
    proc = net[sender].run(["ping", "-n", "-c", str(count), "-i", "0.01", "-W", "2", addr],
                           check=False, timeout=count * 0.05 + 30)
    rtts = [float(line.split("time=")[1].split()[0]) for line in proc.stdout.splitlines()
            if "time=" in line]
    return rtts, count


def measure_loss(net, d: PlannedDirection, addr: str, count: int, pps: float) -> tuple[int, int]:
    """Send ``count`` numbered datagrams sender -> receiver; (lost, sent)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with enter(net[d.receiver].netns):
        rx = socket.socket(family, socket.SOCK_DGRAM)
    with enter(net[d.sender].netns):
        tx = socket.socket(family, socket.SOCK_DGRAM)
    seen: set[int] = set()
    done = threading.Event()
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind((addr, PROBE_PORT))
        rx.settimeout(0.2)

        def receive() -> None:
            quiet_since = None
            while True:
                try:
                    data = rx.recv(64)
                except socket.timeout:
                    if done.is_set():
                        quiet_since = quiet_since or time.monotonic()
                        if time.monotonic() - quiet_since > 1.0:
                            return
                    continue
                if len(data) >= 8:
                    seen.add(struct.unpack_from("!Q", data)[0])

        thread = threading.Thread(target=receive, name="validate-loss-rx")
        thread.start()
        try:
            payload = b"\0" * 56
            start = time.monotonic()
            for i in range(count):
                target = start + i / pps
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                tx.sendto(struct.pack("!Q", i) + payload, (addr, PROBE_PORT))
        finally:
            done.set()
            thread.join()
    finally:
        rx.close()
        tx.close()
    received = len([s for s in seen if s < count])
    return count - received, count


class _TbfCounter:
    """Reads the byte counter of the tbf on one interface (one netlink socket, reused); with
    ``interface``, where there is no tbf (the link engine is the bottleneck, before the
    interface), the interface's transmitted bytes. ``source`` says which it read last."""

    def __init__(self, netns: str, ifname: str, interface: bool = False) -> None:
        from pyroute2 import IPRoute
        with enter(netns):
            self.ipr = IPRoute()
            found = self.ipr.link_lookup(ifname=ifname)
        self.index = found[0] if found else None
        self.interface = interface
        self.source = "tbf byte counter"

    def read(self) -> int | None:
        if self.index is None:
            return None
        for q in self.ipr.get_qdiscs(index=self.index):
            if q.get_attr("TCA_KIND") == "tbf":
                self.source = "tbf byte counter"
                return q.get_attr("TCA_STATS")["bytes"]
        if not self.interface:
            return None
        self.source = "interface tx bytes: the link engine is the bottleneck"
        return self.ipr.get_links(self.index)[0].get_attr("IFLA_STATS64")["tx_bytes"]

    def close(self) -> None:
        self.ipr.close()


def _iperf3(net, d: PlannedDirection, src: str, addr: str, extra: list[str], seconds: float,
            interface: bool = False) -> tuple[dict, list[tuple[float, int]], str]:
    """One iperf3 test from node ``src`` to ``addr`` (through direction ``d``): its JSON and
    the byte samples (t, bytes) of ``d``'s tbf (``interface``: else of its interface) and
    which counter they are.

    A test that fails is tried again (up to ``IPERF_ATTEMPTS``) with a fresh
    server: iperf3 (3.12) does not resend the datagram that starts a UDP
    test, so on a lossy link the client can wait for ever; a client still
    running ``IPERF_HANG_GRACE`` s after its test should have ended is
    stopped and counts as failed. The last failure's JSON is returned.
    """
    counter = _TbfCounter(net[d.sender].netns, d.ifname, interface)
    result: dict = {"error": "iperf3 never ran"}
    try:
        for _attempt in range(IPERF_ATTEMPTS):
            result, samples = _iperf3_once(net, src, node_of(net.deployed.nodes, addr), addr, extra,
                                           seconds, counter)
            if "error" not in result:
                return result, samples, counter.source
    finally:
        counter.close()
    return result, [], counter.source


def _iperf3_once(net, src: str, dst: str, addr: str, extra: list[str], seconds: float,
                 counter: _TbfCounter) -> tuple[dict, list[tuple[float, int]]]:
    server = net[dst].popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT), "-B", addr],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    try:
        argv = ["iperf3", "-c", addr, "-p", str(IPERF_PORT), "-J", "-t", f"{seconds:g}", *extra]
        for _try in range(50):  # the server may not listen yet
            client = net[src].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)
            give_up = time.monotonic() + seconds + IPERF_HANG_GRACE
            while client.poll() is None and time.monotonic() < give_up:
                b = counter.read()
                if b is not None:
                    samples.append((time.monotonic(), b))
                time.sleep(0.05)
            if client.poll() is None:
                client.kill()
                client.communicate()
                return {"error": f"iperf3 client had not ended {IPERF_HANG_GRACE:g}s after its "
                                 f"{seconds:g}s test (a lost UDP start datagram?)"}, samples
            out, _err = client.communicate()
            try:
                result = json.loads(out)
            except json.JSONDecodeError:
                result = {"error": out[-300:]}
            if "error" in result and "refused" in str(result["error"]).lower():
                time.sleep(0.05)
                samples.clear()
                continue
            return result, samples
        return {"error": "iperf3 server never listened"}, samples
    finally:
        server.kill()
        server.wait()


def base_rtt(net, count: int = 50) -> tuple[float | None, str]:
    """The median RTT over the first link of the testbed that nothing emulates (what a
    link round trip takes undelayed: two veth crossings and the stack), and which link;
    (None, why) if every link is emulated."""
    deployed = net.deployed
    for link in deployed.links:
        if any(live.is_emulated(deployed, d) for d in link.directions):
            continue
        rtts, _ = measure_rtt(net, link.a, _address(net, link.b, link.a, link.a_ifname), count)
        if rtts:
            return percentile(rtts, 50), f"{link.name} (not emulated)"
    return None, "every link of the testbed is emulated"


def rtts_under_load(net, src: str, addr: str, seconds: float) -> tuple[list[float], float]:
    """Ping RTTs (ms) from ``src`` to ``addr`` while a TCP flow (iperf3, ``seconds``) runs
    the same way, from its second half; and the flow's goodput (0: it failed)."""
    dst = node_of(net.deployed.nodes, addr)
    server = net[dst].popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT), "-B", addr],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = _start_client(net, src, addr, seconds)
        time.sleep(seconds / 2)        # slow start over, the standing queue built
        count = max(10, int(seconds / 2 / 0.05) - 4)
        proc = net[src].run(["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "2", addr],
                            check=False, timeout=seconds + 30)
        out, _ = client.communicate(timeout=seconds + IPERF_HANG_GRACE)
    finally:
        server.kill()
        server.wait()
    rtts = [float(line.split("time=")[1].split()[0]) for line in proc.stdout.splitlines()
            if "time=" in line]
    try:
        goodput = json.loads(out)["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError, TypeError):
        goodput = 0.0
    return rtts, goodput


def _start_client(net, src: str, addr: str, seconds: float) -> subprocess.Popen:
    """An iperf3 TCP client, started again while the server does not listen yet."""
    argv = ["iperf3", "-c", addr, "-p", str(IPERF_PORT), "-J", "-t", f"{seconds:g}"]
    for _try in range(50):
        client = net[src].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, _ = client.communicate(timeout=0.2)
        except subprocess.TimeoutExpired:
            return client              # connected and sending
        if "refused" not in out.lower():
            return client
        time.sleep(0.05)
    return client


def validate(net, *, links: list[str] | None = None, thorough: bool = False,
             rtt_count: int | None = None) -> Report:
    """Measure each emulated link direction of ``net`` (see the module docstring)."""
    deployed = net.deployed
    report = Report(net.name, deployed.link_backend)
    chosen = [d for name in links for d in live.directions(deployed, name)] if links else \
        deployed.directions

    def in_force(d: PlannedDirection) -> Impairment | None:
        return live.configured(deployed, d, net.state_dir)

    def impairment_of(node: str, link_index: int, peer: str) -> Impairment | None:
        x = next((x for x in deployed.directions if (x.sender, x.link.index, x.receiver) ==
                  (node, link_index, peer)), None)
        return None if x is None else in_force(x)
    rtt_done: dict[int, list[Check]] = {}
    base: list[tuple[float | None, str]] = []       # measured once, when first needed

    def base_of() -> tuple[float | None, str]:
        if not base:
            base.append(base_rtt(net))
        return base[0]
    for d in chosen:
        if not live.is_emulated(deployed, d):
            continue
        imp = in_force(d) or Impairment()
        entry = DirectionReport(d.link.name, d.label, imp.describe())
        addr = _address(net, d.receiver, d.sender, d.ifname)
        both = [in_force(x) or Impairment() for x in d.link.directions]
        if d.link.index not in rtt_done:
            count = rtt_count or (1000 if thorough else 200)
            rtt_done[d.link.index] = _link_rtt(net, d, addr, both, count, base_of)
        entry.checks += rtt_done[d.link.index]
        entry.checks.append(_loss(net, d, addr, imp, thorough))
        heavy = imp.loss is not None and not isinstance(imp.loss, GilbertElliott) \
            and imp.loss.fraction >= 0.5
        if imp.rate is not None and not heavy:
            entry.checks += _rate_checks(net, d, addr, imp, thorough, impairment_of)
            if imp.aqm is not None:
                entry.checks.append(_standing_queue(net, d, addr, imp, round_trip(*both),
                                                    impairment_of, 10.0 if thorough else 5.0))
        report.directions.append(entry)
    return report


def _standing_queue(net, d: PlannedDirection, addr: str, imp: Impairment,
                    rtt_hint: Duration | None,
                    impairment_of: Callable[[str, int, str], Impairment | None],
                    seconds: float) -> Check:
    """Ping RTTs quiet and under a saturating TCP flow through ``d`` (the rate tests'
    sender and receiver), judged by ``standing_queue_check``."""
    assert imp.aqm is not None and imp.rate is not None
    src, dst, note = _rate_sender(net, d, addr, impairment_of)
    quiet, _ = measure_rtt(net, src, dst, 40)
    loaded, goodput = rtts_under_load(net, src, dst, seconds)
    mtu = d.link.mtu
    buffer = imp.aqm_buffer_bytes(rtt_hint, mtu) or 0
    check = standing_queue_check(quiet, loaded, imp.aqm, imp.rate.bps, buffer, goodput)
    if note and "note" not in check.detail:
        check.detail["note"] = note
    return check


def _link_rtt(net, d: PlannedDirection, addr: str, both: list[Impairment], count: int,
              base_of: Callable[[], tuple[float | None, str]]) -> list[Check]:
    """The round trip of ``d``'s link (once per link) against both directions' delays,
    and the error per delayed direction (against the undelayed ``base_of()``)."""
    cfg = sum(i.delay.seconds * 1e3 for i in both if i.delay)
    jit = sum(i.jitter.seconds * 1e3 for i in both if i.jitter)
    if any(_loss_fraction(i) >= 0.5 for i in both):
        return [Check("rtt", f"{cfg:g} ms", "not measured (heavy loss)", None)]
    rtts, sent = measure_rtt(net, d.sender, addr, count)
    check = rtt_check(rtts, sent, cfg, jit)
    if any(_loss_fraction(i) > 0 for i in both) and rtts:
        check.detail["note"] = "some pings lost to the configured loss"
    passes = sum(1 for i in both if i.delay)
    if not rtts or not passes:
        return [check]
    return [check, per_pass_check(rtts, cfg, passes, *base_of())]


def _loss(net, d: PlannedDirection, addr: str, imp: Impairment, thorough: bool) -> Check:
    """Numbered datagrams sender -> receiver, paced below the rate."""
    pps = 2000.0
    if imp.rate is not None:
        pps = min(pps, 0.5 * imp.rate.bps / (8 * (64 + 42)))
    count = 100_000 if thorough else max(200, min(2000, int(pps * 1.5)))
    if thorough:
        pps = min(pps * 2.5 if imp.rate is None else pps, 5000.0)
    lost, sent = measure_loss(net, d, addr, count, pps)
    return loss_check(lost, sent, imp)


def _rate_sender(net, d: PlannedDirection, addr: str,
                 impairment_of: Callable[[str, int, str], Impairment | None]
                 ) -> tuple[str, str, str | None]:
    """Who sends the rate tests of ``d``, to which address, and a note: the link's own
    sender if it is a host (its delay sits at the router's ingress), else a host pair
    whose path crosses this direction, else the router itself (not judged)."""
    nodes = net.deployed.nodes
    if nodes[d.sender].kind == "host":
        return d.sender, addr, None
    via = rate_path(nodes, d, impairment_of)
    if via is not None:
        return via[0], via[1], f"traffic {via[0]}->{node_of(nodes, via[1])} through {d.label}"
    return d.sender, addr, (f"sent by {d.sender} itself (no host path crosses only this "
                            "link): a router's own sockets sit behind its egress delay line, "
                            "where TCP small queues and the socket buffer cap them; not judged")


def _engine_queue_at_egress(net, d: PlannedDirection, imp: Impairment) -> bool:
    """Whether the link engine is ``d``'s bottleneck at the sender's egress (userspace
    backend, an aqm), so that the interface's transmitted bytes are its wire rate. Where
    it sits at the receiver's ingress (a host's direction) the interface sees the offered
    load, and there is no wire rate to read."""
    emulated = net.deployed.emulation(d)
    return (net.deployed.link_backend == "userspace" and imp.aqm is not None
            and imp.aqm.kind != "fifo" and emulated is not None and emulated.ingress is None)


def _rate_checks(net, d: PlannedDirection, addr: str, imp: Impairment, thorough: bool,
                 impairment_of: Callable[[str, int, str], Impairment | None]) -> list[Check]:
    """Wire rate (tbf byte counter under UDP above the rate) and TCP goodput."""
    assert imp.rate is not None
    seconds = 10 if thorough else 2
    loss = imp.loss.fraction if imp.loss is not None and not \
        isinstance(imp.loss, GilbertElliott) else 0.0
    offered = imp.rate.bps * 1.5 / max(0.5, 1 - loss)
    src, dst, note = _rate_sender(net, d, addr, impairment_of)
    checks = []
    result, samples, source = _iperf3(net, d, src, dst,
                                      ["-u", "-b", f"{int(offered)}", "-l", "1400"], seconds,
                                      interface=_engine_queue_at_egress(net, d, imp))
    wire = steady_rate(samples) if source.startswith("tbf") else mean_rate(samples)
    if wire is None or "error" in result:
        checks.append(Check("wire rate", format_bps(imp.rate.bps),
                            f"not measured: {result.get('error', 'no tbf')}", False))
    else:
        check = wire_rate_check(wire, imp.rate.bps, source)
        if note:
            check.detail["note"] = note
            if src == d.sender:
                check.ok = None
        checks.append(check)
    result, _, _ = _iperf3(net, d, src, dst, ["-O", "1"], seconds)
    try:
        goodput = result["end"]["sum_received"]["bits_per_second"]
    except (KeyError, TypeError):
        checks.append(Check("goodput", format_bps(imp.rate.bps),
                            f"iperf3 failed: {result.get('error')}", False))
        return checks
    own = src == d.sender and net.deployed.nodes[d.sender].kind != "host"
    check = goodput_check(goodput, imp.rate.bps, d.link.mtu,
                          judged=_loss_fraction(imp) == 0 and not own)
    if note:
        check.detail["note"] = note
    checks.append(check)
    return checks


def validate_cli(*, topology: str | None, testbed_name: str | None, name: str | None,
                 variables: Mapping[str, Any], link_backend: str, links: list[str] | None,
                 thorough: bool) -> Report:
    if testbed_name:
        return validate(attach(testbed_name), links=links, thorough=thorough)
    with stop_signals_raise(), up(topology, name=name, variables=variables,
                                  link_backend=link_backend) as net:
        return validate(net, links=links, thorough=thorough)
