"""The built-in Python driver: ``testbed.traffic.agent`` run in the namespaces.

Used for request/response latency, UDP with per-packet sequence numbers and
send times, and TCP bulk when an exact per-connection congestion control
read back from the socket is wanted.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

from testbed.shape import Opt, problem_text
from testbed.results import AGENT_CLIENT, AGENT_SERVER, read_json
from testbed.traffic.base import CONNECT_TIMEOUT, Driver, FlowPlan, FlowResult, tail
from testbed.workload.model import Flow

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
# -P: the agent runs as root; a json.py in the caller's directory must not be imported
# (the driver also starts it in "/")
AGENT = (sys.executable, "-P", "-m", "testbed.traffic.agent")


def parse_builtin(client: dict[str, Any] | None, server: dict[str, Any] | None, *,
                  name: str, protocol: str, kind: str, cc_requested: str | None = None,
                  packet_size: int = 0, size: int | None = None) -> FlowResult:
    """Turn the agent's client and server JSON into a ``FlowResult``. Pure.

    ``size``: bytes each connection was to send (a size-bounded flow). A connection's
    ``fct_s`` (from its connect to the receiver having closed after reading it all) is
    given only when the receiver got all ``size`` bytes without an error: a duration-
    bounded or cut-short connection has no completion time.
    """
    res = FlowResult(name=name, driver="builtin", protocol=protocol, kind=kind,
                     cc_requested=cc_requested)
    if client is None:
        return res.fail("builtin client produced no JSON")
    for role, out, shape in (("client", client, AGENT_CLIENT), ("server", server, AGENT_SERVER)):
        bad = problem_text(out, Opt(shape), f"builtin {role} output")
        if bad:
            return res.fail(bad)
    if client.get("error"):
        res.fail(f"client: {client['error']}")
    for err in client.get("errors") or []:
        res.fail(f"client: {err}")
    if server is not None and server.get("error"):
        res.fail(f"server: {server['error']}")
    if protocol == "udp":
        return _parse_udp(res, client, server, packet_size)
    return _parse_tcp(res, client, server, kind, size)


def _parse_udp(res: FlowResult, client: dict[str, Any], server: dict[str, Any] | None,
               packet_size: int) -> FlowResult:
    """UDP: what the client sent per stream against what the server counted."""
    sent = {s["stream"]: s["sent"] for s in client.get("streams", [])}
    streams = (server or {}).get("streams", [])
    total_sent = sum(sent.values())
    received = sum(s["received"] for s in streams)
    res.owd_us = [x for s in streams for x in s.get("owd_us", [])]
    res.bytes = sum(s["bytes"] for s in streams)
    res.seconds = float(client.get("seconds") or 0.0)
    jitters = [s["jitter_us"] for s in streams]
    lost = max(total_sent - received, 0)
    res.udp = {"sent": total_sent, "received": received, "lost": lost,
               "loss": lost / total_sent if total_sent else None,
               "reordered": sum(s["reordered"] for s in streams),
               "duplicates": sum(s["duplicates"] for s in streams),
               "jitter_us": statistics.fmean(jitters) if jitters else None,
               "packet_size": packet_size}
    res.connections = [{"stream": s["stream"], "sent": sent.get(s["stream"]),
                        "received": s["received"], "bytes": s["bytes"]} for s in streams]
    if server is None:
        res.fail("builtin udp server produced no JSON")
    elif total_sent and not received:
        res.fail(f"none of the {total_sent} udp packets arrived")
    return res


def _parse_tcp(res: FlowResult, client: dict[str, Any], server: dict[str, Any] | None,
               kind: str, size: int | None) -> FlowResult:
    """TCP: each connection as the client saw it and (bulk) what its server received."""
    server_conns = {c.get("remote_port"): c for c in (server or {}).get("connections", [])}
    total = 0
    span = 0.0
    for c in client.get("connections", []):
        if not c:
            continue
        srv = server_conns.get(c.get("local_port"), {})
        secs = (c.get("end_ns", 0) - c.get("start_ns", 0)) / 1e9
        got = srv.get("bytes", c.get("bytes", 0)) if kind == "bulk" else c.get("bytes", 0)
        completed = (size is not None and kind == "bulk" and (got or 0) >= size
                     and not c.get("error") and not srv.get("error"))
        res.connections.append({"local_host": c.get("local_host"), "local_port": c.get("local_port"),
                                "cc": c.get("cc"), "bytes": got, "bytes_sent": c.get("bytes"),
                                "seconds": secs, "fct_s": secs if completed else None,
                                "transactions": c.get("transactions")})
        if size is not None and kind == "bulk" and not completed:
            res.fail(f"connection (port {c.get('local_port')}): {got or 0} of its {size} bytes "
                     "arrived")
        res.latency_us.extend(c.get("latencies_us", []))
        total += got or 0
        span = max(span, secs)
    res.bytes = total
    res.seconds = span
    if not res.connections and res.ok:
        res.fail("no connection was established")
    elif res.ok and not total:
        res.fail("connected, but no data arrived" if kind == "bulk"
                 else "connected, but no request was answered")
    return res


class BuiltinDriver(Driver):
    """TCP bulk, TCP request/response and UDP with the in-tree agent."""

    name = "builtin"

    def popen_env(self) -> dict[str, str] | None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        return env

    def check(self, flow: Flow) -> list[str]:
        return []

    def _common(self, plan: FlowPlan) -> list[str]:
        f = plan.flow
        argv = ["--port", str(plan.port), "--count", str(f.count), "--mode", f.kind]
        if f.rr is not None:
            argv += ["--request", str(f.rr.request.bytes), "--response", str(f.rr.response.bytes),
                     "--think", f"{f.rr.think.seconds:g}"]
        return argv

    def server_argv(self, plan: FlowPlan) -> list[str]:
        role = "udp-server" if plan.flow.protocol == "udp" else "tcp-server"
        argv = [*AGENT, role, "--bind", plan.dst_ip, *self._common(plan)]
        if plan.flow.protocol == "udp":
            argv += ["--packets-out", str(plan.out_dir / f"{plan.flow.name}.packets.csv"),
                     "--idle-timeout", "3"]
        if plan.flow.rcvbuf is not None:
            argv += ["--rcvbuf", str(plan.flow.rcvbuf.bytes)]
        return argv

    def client_argv(self, plan: FlowPlan) -> list[str]:
        f = plan.flow
        role = "udp-client" if f.protocol == "udp" else "tcp-client"
        argv = [*AGENT, role, "--host", plan.dst_ip, "--bind", plan.src_ip,
                *self._common(plan)]
        if f.size is not None:
            argv += ["--size", str(f.size.bytes)]
        else:
            argv += ["--duration", f"{plan.seconds:g}"]
        if f.cc:
            argv += ["--cc", f.cc]
        if f.protocol == "tcp":
            argv += ["--connect-timeout", f"{CONNECT_TIMEOUT:g}"]
        if f.sndbuf is not None:
            argv += ["--sndbuf", str(f.sndbuf.bytes)]
        if f.protocol == "udp":
            assert f.rate is not None
            argv += ["--rate", f"{f.rate.bps:g}", "--packet-size", str(f.packet_size.bytes)]
        return argv

    def parse(self, plan: FlowPlan) -> FlowResult:
        client, why = read_json(plan.client_out)
        server, _ = read_json(plan.server_out)
        res = parse_builtin(client, server, name=plan.flow.name, protocol=plan.flow.protocol,
                            kind=plan.flow.kind, cc_requested=plan.flow.cc,
                            packet_size=plan.flow.packet_size.bytes,
                            size=plan.flow.size.bytes if plan.flow.size else None)
        if client is None:
            res.error = f"builtin client: {why}; stderr: {tail(plan.client_err) or '(empty)'}"
        return res
