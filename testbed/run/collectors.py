"""One run's collectors: captures, kernel TCP events, tcp_info, qdisc and host
load samplers.
Each ``start_*`` registers the collector's stop on the run's ExitStack right
after it starts, so whatever ends the run stops everything that was started,
in the reverse order; what a stop returns (counters, stats) is kept here for
``run.gather``."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from testbed.collect import capture as cap
from testbed.collect import hostload, qdisc, tcpinfo
from testbed.collect.tcpevents import TcpEventsCollector, TraceStats, buffer_kb
from testbed.emulation import enginectl, userspace
from testbed.kernel import tracefs
from testbed.realize import state
from testbed.run.capture import CapturePoint
from testbed.run.flows import Plans
from testbed.workload import Workload

Capture = tuple[subprocess.Popen, Path, str]      # (tcpdump, its pcap, "node:ifname")
Record = Callable[[subprocess.Popen, str, str, str], None]   # (process, role, flow, node)
EVENTS_PER_S_UNLIMITED = 50_000       # tcp events per second of a TCP connection at full speed
# the reader drains the ring buffer as it fills: the buffer need only hold what comes while
# the reader is starved, not the whole run
STARVED_S = 10.0


def events_per_s(plans: Plans) -> float:
    """The tcp events a run's TCP flows may make per second (``tcp_probe`` on each ACK,
    ~1.5 a full-size segment; a flow without a rate as if it ran at full speed)."""
    total = 0.0
    for plan, _ in plans:
        flow = plan.flow
        if flow.protocol == "tcp":
            rate = 1.5 * flow.rate.bps / (8 * 1448) if flow.rate else EVENTS_PER_S_UNLIMITED
            total += flow.count * rate
    return total


@dataclass
class Collectors:
    raw: Path
    hs: hostload.HostLoadSampler = field(default_factory=hostload.HostLoadSampler)
    captures: list[Capture] = field(default_factory=list)
    cap_stats: dict[str, Any] = field(default_factory=dict)
    sampler: tcpinfo.TcpInfoSampler | None = None
    stats: tcpinfo.SamplerStats | None = None
    qs: qdisc.QdiscSampler | None = None
    events: TcpEventsCollector | None = None
    events_stats: TraceStats | None = None
    events_off: dict[str, Any] | None = None     # why there are no tcp events (result.json)

    def stop_captures(self) -> None:
        if self.captures:
            self.cap_stats = cap.stop_captures(self.captures)

    def start_captures(self, net: Any, points: list[CapturePoint], snaplen: int,
                       record: Record) -> None:
        """tcpdump on each point, returning once each captures. Their stop is
        ``stop_captures``, registered by the caller before the servers start, so that
        captures stop last and see the flows' last packets."""
        for node, ifname in points:
            pcap = self.raw / f"capture-{node}-{ifname}.pcap"
            proc = cap.start_capture(net.nodes[node], ifname, pcap, snaplen)
            self.captures.append((proc, pcap, f"{node}:{ifname}"))
            record(proc, "capture", "", node)
        for proc, pcap, label in self.captures:
            cap.wait_capturing(proc, pcap, label)

    def prepare_samplers(self, net: Any, plans: Plans, wl: Workload,
                         stack: contextlib.ExitStack) -> None:
        """The qdisc sampler on every emulated link's ends, the tcp_info sampler on
        every TCP sender's namespace (their sockets closed by ``stack``)."""
        targets: dict[str, list[str]] = {}
        for l in net.links:
            if l.emulated:
                targets.setdefault(l.a, []).append(l.a_ifname)
                targets.setdefault(l.b, []).append(l.b_ifname)
        engine, places = self._engine_queues(net)
        self.qs = qdisc.QdiscSampler([(n, net.nodes[n].enter, names) for n, names in targets.items()],
                                     interval=wl.sampling.qdisc.seconds, engine=engine,
                                     engine_places=places)
        diag: list[tuple[str, socket.socket]] = []
        for name in sorted({p.flow.src for p, _ in plans if p.flow.protocol == "tcp"}):
            with net.nodes[name].enter():
                diag.append((name, tcpinfo.open_diag_socket()))
            stack.callback(diag[-1][1].close)
        self.sampler = tcpinfo.TcpInfoSampler(diag, self.raw / "tcp_info.spool",
                                              interval=wl.sampling.tcp_info.seconds,
                                              ports=frozenset(p.port for p, _ in plans))

    @staticmethod
    def _engine_queues(net: Any) -> tuple[enginectl.QueueQueries | None,
                                          dict[str, tuple[str, str]]]:
        """Where the link engine is some direction's bottleneck queue (userspace backend, an
        aqm), its status requests and its lanes' places, for the qdisc sampler."""
        if net.link_backend != "userspace" or not userspace.engine_has_queues(net.state_dir):
            return None, {}
        return (enginectl.QueueQueries(net.state_dir),
                userspace.lane_places(net.state_dir, net.deployed.emulated))

    def start_tcp_events(self, net: Any, run_id: str, plans: Plans, wl: Workload,
                         stack: contextlib.ExitStack) -> None:
        """Record the kernel's TCP events of the flows' ports, on by default. Without
        tracefs mounted, mount it (a host change: recorded, undone by the last down or
        clean). Where they cannot be recorded, ``events_off`` says why and how to fix it."""
        if not wl.sampling.tcp_events:
            self.events_off = {"available": False, "why": ["sampling.tcp_events is false"]}
            return
        if not any(p.flow.protocol == "tcp" for p, _ in plans):
            self.events_off = {"available": False, "why": ["no TCP flows"]}
            return
        problems, fix = self._tracefs_problems(net.name)
        if problems:
            self.events_off = {"available": False, "why": problems, "fix": fix}
            return
        seconds = min(STARVED_S, wl.planned_seconds)
        self.events = TcpEventsCollector(
            state.instance_dir(net.name), tracefs.instance_name(net.name, run_id),
            frozenset(p.port for p, _ in plans), self.raw / "tcp_events.spool",
            buffer_kb=buffer_kb(events_per_s(plans), seconds))
        try:
            self.events.start()         # on failure it leaves nothing behind
        except OSError as exc:          # e.g. no memory for the buffer: the run goes on without
            self.events, self.events_off = None, {"available": False,
                                                  "why": [f"could not start tracing: {exc}"]}
            return
        stack.callback(self._stop_tcp_events)

    @staticmethod
    def _tracefs_problems(instance: str) -> tuple[list[str], str | None]:
        found = tracefs.probe(tracefs.TCP_EVENTS)
        if found.root is None and found.fix == tracefs.MOUNT_FIX:
            try:
                state.mount_tracefs(instance)
            except OSError as exc:
                return [f"tracefs is not mounted and mounting it failed: {exc}"], found.fix
            found = tracefs.probe(tracefs.TCP_EVENTS)
        return ([] if found.usable else found.problems), found.fix or None

    def _stop_tcp_events(self) -> None:
        assert self.events is not None
        self.events_stats = self.events.stop()

    def start_samplers(self, t0: float, stack: contextlib.ExitStack) -> None:
        """Start host load, qdisc and tcp_info sampling on the run's clock ``t0``."""
        self.hs.start(t0)
        stack.callback(self.hs.stop)
        if self.qs is not None:
            self.qs.start(t0)
            stack.callback(self.qs.stop)
        if self.sampler is not None:
            self.sampler.start()
            stack.callback(self._stop_tcp_info)

    def _stop_tcp_info(self) -> None:
        assert self.sampler is not None
        self.stats = self.sampler.stop()

    def check(self) -> str | None:
        """Why the run must stop now (a collector it cannot do without failed), if so."""
        if self.sampler is not None and self.sampler.error is not None:
            return f"tcp_info sampler failed: {self.sampler.error}"
        if self.events is not None and self.events.error is not None:
            return f"tcp events reader failed: {self.events.error}"
        return None
