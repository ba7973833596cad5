"""What a running workload shows on stderr: the progress line (point i/N,
elapsed and expected time) and the per-flow throughput it carries, read from
the kernel's own socket counters (``RateMeter``)."""

from __future__ import annotations

import socket
import sys
import time
from typing import Any

from testbed.collect import tcpinfo
from testbed.output import write_quietly
from testbed.traffic import Driver, FlowPlan


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.1f}" if bps < 1e9 else f"{bps / 1e9:.2f}G"


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressLine:
    """Progress of a ``run_workload`` call on stderr: point i/N, elapsed and expected time,
    each flow's current throughput. On a terminal one line is rewritten in place every
    0.5 s; otherwise (a log, CI) a plain line every 5 s. Messages go on lines of their own."""

    OVERHEAD_GUESS = 6.0  # seconds of up, checks, teardown per point, until one is measured

    def __init__(self, enabled: bool, planned: list[float], stream: Any = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.5 if self.tty else 5.0
        self.planned = planned
        self.started = time.monotonic()
        self.index = 0
        self.label = ""
        self.overheads: list[float] = []
        self._point_started = self.started
        self._next = 0.0
        self._width = 0

    def _write(self, text: str) -> None:
        """Write and flush; if the reader has gone (``output.write_quietly``), progress
        stops and the run carries on."""
        if self.enabled and not write_quietly(self.stream, text):
            self.enabled = self.tty = False

    def message(self, text: str) -> None:
        if self.enabled:
            self._clear()
            self._write(f"testbed: {text}\n")

    def begin_point(self, index: int, label: str) -> None:
        self.index, self.label = index, label
        self._point_started = time.monotonic()
        self._next = 0.0
        self.message(f"[{index + 1}/{len(self.planned)}] {label}")

    def end_point(self) -> None:
        self._clear()
        took = time.monotonic() - self._point_started
        self.overheads.append(max(0.0, took - self.planned[self.index]))

    def expected_total(self) -> float:
        overhead = (sum(self.overheads) / len(self.overheads)) if self.overheads else self.OVERHEAD_GUESS
        return sum(self.planned) + overhead * len(self.planned)

    def due(self, now: float) -> bool:
        return self.enabled and now >= self._next

    def show(self, now: float, t_run: float, rates: dict[str, float], running: int) -> None:
        """The live line: ``t_run`` seconds into the traffic of the current point."""
        self._next = now + self.interval
        flows = "  ".join(f"{name} {_mbit(bps)}" for name, bps in rates.items())
        text = (f"[{self.index + 1}/{len(self.planned)}] {self.label}  "
                f"t={t_run:.0f}/{self.planned[self.index]:g}s  "
                f"elapsed {_clock(now - self.started)} of ~{_clock(self.expected_total())}  "
                f"{running} running" + (f"  Mbit/s: {flows}" if flows else ""))
        if self.tty:
            pad = max(0, self._width - len(text))
            self._write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            self._write(f"testbed: {text}\n")

    def _clear(self) -> None:
        if self.tty and self._width:
            self._write("\r" + " " * self._width + "\r")
            self._width = 0


class RateMeter:
    """Each TCP flow's current throughput for the progress line: bytes acked by its
    sockets (one filtered sock_diag dump per sender namespace, on sockets of its own,
    not the sampler's), differenced between calls."""

    def __init__(self, net: Any, plans: list[tuple[FlowPlan, Driver]]) -> None:
        tcp = [p for p, _ in plans if p.flow.protocol == "tcp"]
        self.flow_of = {(p.flow.src, p.port): p.flow.name for p in tcp}
        self.socks: list[tuple[str, socket.socket]] = []
        for node in sorted({p.flow.src for p in tcp}):
            with net.nodes[node].enter():
                self.socks.append((node, tcpinfo.open_diag_socket()))
        self.request = tcpinfo.build_request(dports=frozenset(p.port for p in tcp)) if tcp else b""
        self.buf = bytearray(1 << 20)
        self.last: tuple[float, dict[str, int]] | None = None

    def rates(self, now: float) -> dict[str, float]:
        acked: dict[str, int] = {name: 0 for name in self.flow_of.values()}
        for node, sock in self.socks:
            for msg in tcpinfo.dump(sock, self.request, self.buf):
                row = tcpinfo.decode_message(msg)
                name = self.flow_of.get((node, row["dport"]))
                if name is not None:
                    acked[name] += row.get("bytes_acked") or 0
        previous, self.last = self.last, (now, acked)
        if previous is None or now <= previous[0]:
            return {}
        dt = now - previous[0]
        # a socket that closed takes its bytes with it: never show a negative rate
        return {n: max(0, acked[n] - previous[1].get(n, 0)) * 8 / dt for n in acked}

    def close(self) -> None:
        for _, sock in self.socks:
            sock.close()
