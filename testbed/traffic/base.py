"""What every traffic driver shares: the run plan of one flow, its parsed
result, and starting/stopping the server and client processes in namespaces.

A driver is a small class with ``check`` (can it do this flow, is its binary
here), ``start_server``/``start`` (processes in the receiver's and sender's
namespaces), ``stop``, and a pure ``parse`` of the captured output.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testbed.results import read_json  # noqa: F401  (drivers read their raw output with it)
from testbed.workload.model import Flow

# How long a client waits for its connection. TCP resends a lost SYN 1, 2, 3, 4 s after the
# first (tcp_syn_linear_timeouts=4, Linux >= 6.5) or 1, 3, 7 s after it (older kernels): 10 s
# lets a flow on a lossy link survive three lost SYNs either way, as a real application would.
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class FlowPlan:
    """One flow as it will run: ports, addresses, where its output goes."""

    flow: Flow
    port: int
    src_ip: str
    dst_ip: str
    seconds: float
    out_dir: Path

    @property
    def server_out(self) -> Path:
        return self.out_dir / f"{self.flow.name}.server.json"

    @property
    def client_out(self) -> Path:
        return self.out_dir / f"{self.flow.name}.client.json"

    @property
    def server_err(self) -> Path:
        return self.out_dir / f"{self.flow.name}.server.stderr"

    @property
    def client_err(self) -> Path:
        return self.out_dir / f"{self.flow.name}.client.stderr"


@dataclass
class FlowResult:
    """What one flow did, as parsed from its driver's output."""

    name: str
    driver: str
    protocol: str
    kind: str
    ok: bool = True
    error: str | None = None
    cc_requested: str | None = None
    connections: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0
    retransmits: int | None = None
    latency_us: list[float] = field(default_factory=list)
    owd_us: list[float] = field(default_factory=list)
    udp: dict[str, Any] = field(default_factory=dict)

    @property
    def goodput_bps(self) -> float:
        return self.bytes * 8 / self.seconds if self.seconds > 0 else 0.0

    @property
    def local_ports(self) -> list[int]:
        return [c["local_port"] for c in self.connections if c.get("local_port")]

    def fail(self, message: str) -> "FlowResult":
        self.ok = False
        self.error = message if self.error is None else f"{self.error}; {message}"
        return self


class NodeLike(Protocol):
    """The part of ``testbed.instance.network.Node`` drivers use."""

    name: str

    def popen(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen: ...


def tail(path: Path, n: int = 300) -> str:
    try:
        return path.read_text(errors="replace").strip()[-n:]
    except OSError:
        return ""


class Driver:
    """Base of the drivers: process handling; subclasses build argv and parse."""

    name = "driver"
    binary: str | None = None
    apt_package: str | None = None

    def host_problems(self) -> list[str]:
        """What this host lacks for the driver at all (its binary), whatever the flow."""
        if self.binary and shutil.which(self.binary) is None:
            return [f"{self.binary} is not installed; install it with 'apt-get install "
                    f"{self.apt_package or self.binary}'"]
        return []

    def check(self, flow: Flow) -> list[str]:
        """Problems that stop this driver from running ``flow`` (empty if none): the
        host's (``host_problems``) and then the flow's own."""
        return self.host_problems()

    def server_argv(self, plan: FlowPlan) -> list[str]:
        raise NotImplementedError

    def client_argv(self, plan: FlowPlan) -> list[str]:
        raise NotImplementedError

    def popen_env(self) -> dict[str, str] | None:
        return None

    def _spawn(self, node: NodeLike, argv: list[str], out: Path, err: Path) -> subprocess.Popen:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            # cwd "/": tools run as root never start in the caller's directory
            kwargs: dict[str, Any] = {"stdout": fo, "stderr": fe, "stdin": subprocess.DEVNULL,
                                      "cwd": "/"}
            env = self.popen_env()
            if env is not None:
                kwargs["env"] = env
            return node.popen(argv, **kwargs)

    def start_server(self, node: NodeLike, plan: FlowPlan) -> subprocess.Popen:
        return self._spawn(node, self.server_argv(plan), plan.server_out, plan.server_err)

    def start(self, node: NodeLike, plan: FlowPlan) -> subprocess.Popen:
        return self._spawn(node, self.client_argv(plan), plan.client_out, plan.client_err)

    def stop(self, proc: subprocess.Popen, *, grace: float = 3.0) -> int | None:
        """Ask the process to finish (SIGTERM: it writes what it has), then kill it."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def parse(self, plan: FlowPlan) -> FlowResult:
        raise NotImplementedError


