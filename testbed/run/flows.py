"""One run's flows on a testbed that is up: their plans (ports, addresses,
drivers), the checks just before the servers start (each pair can ping, each
port is free), waiting until a server listens, and noticing a server that died.
Changes nothing but the processes the drivers start."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from testbed.collect import tcpinfo
from testbed.errors import WorkloadError
from testbed.results import read_json
from testbed.traffic import DRIVERS, Driver, FlowPlan, default_driver
from testbed.traffic.base import tail
from testbed.workload import Workload

BASE_PORT = 5201
SERVER_READY_TIMEOUT = 5.0

Plans = list[tuple[FlowPlan, Driver]]


def flow_plans(wl: Workload, net: Any, raw: Path) -> Plans:
    """Each flow's plan (port BASE_PORT + its index) and a fresh driver for it."""
    plans = []
    for i, flow in enumerate(wl.flows):
        plan = FlowPlan(flow=flow, port=BASE_PORT + i, src_ip=net.nodes[flow.src].ipv4,
                        dst_ip=net.nodes[flow.dst].ipv4,
                        seconds=(flow.duration or wl.duration).seconds, out_dir=raw.absolute())
        plans.append((plan, DRIVERS[default_driver(flow)]()))
    return plans


def check_reachable(net: Any, wl: Workload) -> None:
    """Every (sender, receiver) pair answers a ping, or the run stops before it starts."""
    for src, dst in sorted({(f.src, f.dst) for f in wl.flows}):
        ip = net.nodes[dst].ipv4
        # up to 15 echo requests over 3 s, done at the first reply: one lost to the
        # link's own random loss must not fail the run
        p = net.nodes[src].run(["ping", "-c", "1", "-i", "0.2", "-w", "3", "-I",
                                net.nodes[src].ipv4, ip], check=False, timeout=10)
        if p.returncode != 0:
            raise WorkloadError(f"{src} cannot reach {dst} ({ip}): ping failed (no reply in "
                                "3 s); check the topology's links, routes and loss "
                                "('testbed plan' shows them)")


def _protocol(plan: FlowPlan) -> int:
    return socket.IPPROTO_UDP if plan.flow.protocol == "udp" else socket.IPPROTO_TCP


def _diag_socket(net: Any, node: str) -> socket.socket:
    with net.nodes[node].enter():
        return tcpinfo.open_diag_socket()


def check_ports_free(net: Any, plans: Plans) -> None:
    """Refuse to start when another socket already holds a flow's port on its receiver."""
    busy: list[str] = []
    for plan, _ in plans:
        sock = _diag_socket(net, plan.flow.dst)
        try:
            if tcpinfo.listening(sock, plan.port, protocol=_protocol(plan)):
                busy.append(f"flow {plan.flow.name}: {plan.flow.protocol} port {plan.port} on "
                            f"{plan.flow.dst} is already in use by another socket")
        finally:
            sock.close()
    if busy:
        raise WorkloadError("; ".join(busy) + " (stop what holds it: 'testbed exec "
                            f"{net.name} <node> ss -tulpn' shows it)")


def wait_listening(net: Any, plan: FlowPlan, server: subprocess.Popen) -> None:
    """Return once the flow's server listens; raise if it exits first or takes too long."""
    sock = _diag_socket(net, plan.flow.dst)
    where = f"flow {plan.flow.name}: server on {plan.flow.dst} port {plan.port}"
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise WorkloadError(f"{where} exited (status {server.returncode}) before "
                                    f"listening: {explain(plan.server_out, plan.server_err)}")
            if tcpinfo.listening(sock, plan.port, protocol=_protocol(plan)):
                return
            time.sleep(0.02)
    finally:
        sock.close()
    raise WorkloadError(f"{where} did not listen within {SERVER_READY_TIMEOUT:g}s")


def server_failures(plans: Plans, servers: list[subprocess.Popen], known: dict[str, str],
                    elapsed: float) -> dict[str, str]:
    """Flows whose server died (signal or error status) and are not in ``known`` yet:
    flow name -> why. (A one-test iperf3 server exits 0 on its own when its flow is done.)"""
    found: dict[str, str] = {}
    for (plan, _), server in zip(plans, servers):
        code = server.poll()
        if code is None or code == 0 or plan.flow.name in known:
            continue
        found[plan.flow.name] = (f"server on {plan.flow.dst} port {plan.port} (pid "
                                 f"{server.pid}) {exit_how(code)} {elapsed:.1f}s into the run")
    return found


def exit_how(code: int) -> str:
    """'was killed by SIGKILL' or 'exited with status 1', for a Popen return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def explain(out: Path, err: Path) -> str:
    """Why a server failed, from its JSON output's error or the tail of what it printed."""
    data, _ = read_json(out)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return tail(err) or tail(out) or "(no output)"
