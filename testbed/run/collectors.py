"""One run's collectors: captures, tcp_info, qdisc and host load samplers.
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
from testbed.run.capture import CapturePoint
from testbed.run.flows import Plans
from testbed.workload import Workload

Capture = tuple[subprocess.Popen, Path, str]      # (tcpdump, its pcap, "node:ifname")
Record = Callable[[subprocess.Popen, str, str, str], None]   # (process, role, flow, node)


@dataclass
class Collectors:
    raw: Path
    hs: hostload.HostLoadSampler = field(default_factory=hostload.HostLoadSampler)
    captures: list[Capture] = field(default_factory=list)
    cap_stats: dict[str, Any] = field(default_factory=dict)
    sampler: tcpinfo.TcpInfoSampler | None = None
    stats: tcpinfo.SamplerStats | None = None
    qs: qdisc.QdiscSampler | None = None

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
        self.qs = qdisc.QdiscSampler([(n, net.nodes[n].enter, names) for n, names in targets.items()],
                                     interval=wl.sampling.qdisc.seconds)
        diag: list[tuple[str, socket.socket]] = []
        for name in sorted({p.flow.src for p, _ in plans if p.flow.protocol == "tcp"}):
            with net.nodes[name].enter():
                diag.append((name, tcpinfo.open_diag_socket()))
            stack.callback(diag[-1][1].close)
        self.sampler = tcpinfo.TcpInfoSampler(diag, self.raw / "tcp_info.spool",
                                              interval=wl.sampling.tcp_info.seconds,
                                              ports=frozenset(p.port for p, _ in plans))

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
        return None
