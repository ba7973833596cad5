"""Running a workload: bring the testbed up (or attach), start servers,
collectors and clients on schedule, wait, stop everything, parse, and write
the run directory. Teardown always happens (try/finally; SIGINT, SIGTERM and
SIGHUP become ``Interrupted``), and whatever was gathered is kept and marked.

Order inside one run:
  preflight (all points, before anything starts) -> up/attach -> node and
  reachability checks -> manifest "before" -> servers (wait until listening)
  -> capture, qdisc, host, tcp_info collectors -> clients at their offsets
  -> wait -> stop clients, collectors, servers -> parse -> result.json.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from testbed.run import conditions
from testbed.collect import capture as cap
from testbed.collect import hostload, qdisc, tcpinfo
from testbed.errors import ConfigError, Interrupted, PreflightError, TestbedError, WorkloadError
from testbed.output import say
from testbed.run.progress import ProgressLine, RateMeter
from testbed.signals import Terminated, stop_signals_raise
from testbed.results import SCHEMA_VERSION, jain_index, make_run_dir, write_json, write_table
from testbed.emulation import enginectl
from testbed.emulation.scheduler import Scheduler
from testbed.run.summary import flow_summary, qdisc_drops
from testbed.traffic import DRIVERS, Driver, FlowPlan, default_driver
from testbed.traffic.base import CONNECT_TIMEOUT
from testbed.workload import RunPoint, Workload, expand_points, load_source, load_workload
from testbed.version import __version__

BASE_PORT = 5201
SERVER_READY_TIMEOUT = 5.0
# past a flow's planned end before it is stopped: a handshake may take CONNECT_TIMEOUT first
GRACE = CONNECT_TIMEOUT + 10.0
SYSCTLS = ("net/ipv4/tcp_congestion_control", "net/ipv4/tcp_allowed_congestion_control",
           "net/ipv4/tcp_ecn", "net/ipv4/tcp_sack", "net/ipv4/tcp_timestamps",
           "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/tcp_no_metrics_save",
           "net/ipv4/tcp_slow_start_after_idle", "net/ipv4/ip_forward", "net/core/default_qdisc")
OFFLOADS = ("tcp-segmentation-offload", "generic-segmentation-offload",
            "generic-receive-offload", "large-receive-offload")


def available_ccs() -> list[str]:
    try:
        return Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    except OSError:
        return []


def _progress(enabled: bool, message: str) -> None:
    if enabled:
        say(sys.stderr, f"testbed: {message}")


def interrupted(signum: int) -> Interrupted:
    """The error a run stopped by ``signum`` ends with; its exit code is the shell's."""
    exc = Interrupted(f"interrupted by {signal.Signals(signum).name}; "
                      "partial results are kept and the testbed is torn down")
    exc.exit_code = 128 + signum        # 130 for Ctrl-C, 143 SIGTERM, 129 SIGHUP, as a shell says
    return exc


@dataclass(frozen=True)
class Prepared:
    """What preflight found for one point: its topology, and (attaching) where the
    workload's variables disagree with the testbed (``conditions.mismatches``)."""

    topology: Any
    mismatches: list[dict[str, Any]]


def preflight(workloads: list[Workload], *, testbed_name: str | None = None,
              instance_name: str | None = None, allow_mismatch: bool = False) -> list[Prepared]:
    """Everything that can be checked before touching the kernel, all problems at once.

    The topology is loaded and planned (pure), or the attached testbed's state read,
    so that a flow naming a node it lacks is an input error here, not after ``up``.
    Problems with the workload file (nodes, drivers, congestion controls) raise one
    ``ConfigError`` (exit 2) naming the file, the first problem's YAML path and line
    and the others after it; a host that lacks a tool raises ``PreflightError``.

    Attaching, a workload whose variables feed the topology with values the testbed
    does not have is refused (ConfigError) unless ``allow_mismatch``: its runs would
    be filed under conditions they did not have. With it they run, warned about and
    marked suspect.
    """
    problems: list[tuple[str, int | None, str]] = []     # (YAML path, line, message)
    host: list[str] = []
    ccs = available_ccs()
    attached = _attached(testbed_name) if testbed_name else None
    live_dirs = conditions.link_directions(attached.deployed, attached.state_dir) \
        if attached else []
    prepared: list[Prepared] = []
    for wl in workloads:
        lines = _workload_lines(wl)

        def bad(path: str, message: str) -> None:
            problems.append((path, lines.get(path) or lines.get(path.rsplit(".", 1)[0]), message))

        if attached is None:
            topo = _topology_for(wl)
            net = _planned(topo, instance_name)
            whose = f"the topology {topo.name!r} has"
        else:
            topo, net = None, attached
            whose = f"testbed {testbed_name!r} has"
        found = conditions.mismatches(wl, _topology_for(wl), attached.deployed, live_dirs) \
            if attached is not None and wl.variables else []
        prepared.append(Prepared(topo, found))
        for flow in wl.flows:
            for key, node in (("from", flow.src), ("to", flow.dst)):
                if node not in net.nodes:
                    bad(f"{flow.yaml_path}.{key}", f"unknown node {node!r}; {whose} "
                        f"{', '.join(sorted(net.nodes))}")
                elif net.nodes[node].ipv4 is None:
                    bad(f"{flow.yaml_path}.{key}", f"node {node!r} has no IPv4 address")
            name = default_driver(flow)
            if name not in DRIVERS:
                bad(f"{flow.yaml_path}.driver", f"unknown driver {name!r} (known: {', '.join(DRIVERS)})")
                continue
            driver = DRIVERS[name]()
            missing = driver.host_problems()
            host += [f"{wl.file.name}: {flow.yaml_path}: {p}" for p in missing]
            for p in driver.check(flow):
                if p not in missing:
                    bad(f"{flow.yaml_path}.driver" if flow.driver else flow.yaml_path, p)
            if flow.cc and ccs and flow.cc not in ccs:
                bad(f"{flow.yaml_path}.cc", f"congestion control {flow.cc!r} is not available in "
                    f"this kernel (available: {' '.join(ccs)}); try 'modprobe tcp_{flow.cc}' or "
                    "choose one of those")
        if wl.capture.enabled:
            host += [f"{wl.file.name}: {p}" for p in cap.tcpdump_check()]
            for i, spec in enumerate(wl.capture.interfaces):
                problem = capture_problem(spec, net)
                if problem:
                    bad(f"capture.interfaces[{i}]", problem)
    host = list(dict.fromkeys(host))
    if problems:
        unique = list(dict.fromkeys(problems))
        (path, line, message), rest = unique[0], unique[1:]
        also = [f"{p} (line {n}): {m}" if n else f"{p}: {m}" for p, n, m in rest] + host
        raise ConfigError(message + "".join(f"; also {a}" for a in also),
                          file=str(workloads[0].file), path=path, line=line)
    if host:
        raise PreflightError("; ".join(host))
    wrong = [m for p in prepared for m in p.mismatches]
    if wrong and not allow_mismatch:
        fix = {m["variable"]: m["testbed"] for m in wrong
               if m["where"] == "as built" and m["variable"]}
        hint = (" (" + " ".join(f"--set {k}={v}" for k, v in fix.items()) + " records them)") \
            if fix else ""
        raise ConfigError(
            f"testbed {testbed_name!r} does not have the conditions this workload's variables "
            "name, so its runs would be filed under the wrong ones: "
            + "; ".join(conditions.messages(wrong))
            + f". Set the variables to what the testbed has{hint}, bring up a testbed with "
            "them, or allow the mismatch (--allow-mismatch; run_workload(allow_mismatch=True)): "
            "the runs are then marked suspect)", file=str(workloads[0].file), path="variables")
    return prepared


def capture_problem(spec: str, net: Any) -> str | None:
    """What is wrong with one ``capture.interfaces`` entry for ``net`` (a plan or a testbed)."""
    if spec == "bottleneck":
        return None
    if ":" in spec:
        node, ifname = spec.split(":", 1)
        if node not in net.nodes:
            return f"capture interface {spec!r}: no node {node!r}"
        names = sorted(i.ifname for i in net.nodes[node].interfaces)
        return None if ifname in names else \
            f"capture interface {spec!r}: {node} has {', '.join(names) or 'no interfaces'}"
    if spec in net.nodes:
        return None
    if "-" in spec and all(p in net.nodes for p in spec.split("-", 1)):
        a, b = spec.split("-", 1)
        return None if any({l.a, l.b} == {a, b} for l in net.links) else \
            f"capture interface {spec!r}: no link between {a} and {b}"
    return (f"capture interface {spec!r}: write 'bottleneck', 'node', 'node:ifname' or 'a-b' "
            "(a link) with nodes of the topology")


def _workload_lines(wl: Workload) -> dict[str, int]:
    """YAML path -> line of the workload as rendered (the loader keeps the lines true)."""
    from testbed.model import document as loader
    try:
        return loader.parse_yaml(wl.rendered_text, str(wl.file))[1]
    except ConfigError:
        return {}


def _attached(testbed_name: str) -> Any:
    """The Network of a testbed that is up (read from its state; nothing is changed)."""
    import testbed
    return testbed.attach(testbed_name)


def _planned(topo: Any, instance_name: str | None) -> Any:
    """The Network the topology would become: its nodes and addresses, from the plan (pure)."""
    from testbed.instance.network import Network, plan_for
    from testbed.plan.deployed import Deployed
    return Network(Deployed.of(plan_for(topo, instance_name)), owned=False)


def run_workload(path: str | os.PathLike[str], *, variables: dict[str, Any] | None = None,
                 repeat: int | None = None, output: str | os.PathLike[str] | None = None,
                 testbed_name: str | None = None, progress: bool = True, name: str | None = None,
                 link_backend: str = "auto", command: list[str] | None = None,
                 allow_mismatch: bool = False) -> list[Path]:
    """Run every point of a workload; return the run directories written.

    Raises after the failing run (its directory kept and marked) so that a
    sweep does not carry on over a broken setup.
    """
    source = load_source(path)
    points = expand_points(source, variables, repeat)
    workloads = [load_workload(path, p.variables, source=source) for p in points]
    prepared = preflight(workloads, testbed_name=testbed_name, instance_name=name,
                         allow_mismatch=allow_mismatch)
    out = Path(output) if output is not None else None
    dirs: list[Path] = []
    line = ProgressLine(progress, [wl.planned_seconds for wl in workloads])
    with stop_signals_raise(interrupted, once=True):
        for i, (point, wl, prep) in enumerate(zip(points, workloads, prepared)):
            line.begin_point(i, f"{wl.name} {point.label}")
            run = Run(wl, point, output=out, testbed_name=testbed_name, progress=progress,
                      instance_name=name, link_backend=link_backend,
                      command=command if command is not None else list(sys.argv), line=line,
                      topology=prep.topology)
            try:
                dirs.append(run.execute())
            finally:
                line.end_point()
                if run.run_dir is not None and run.run_dir not in dirs:
                    dirs.append(run.run_dir)
            line.message(f"result: {run.run_dir}")
    return dirs


def _topology_for(wl: Workload) -> Any:
    import testbed
    from testbed.model import document as loader
    from testbed.model.topology import parse_topology
    if wl.topology_path is not None:
        return testbed.load_topology(wl.topology_path, wl.variables)
    doc = loader.Document(file=f"{wl.file} (topology:)", data=wl.topology_inline, lines={},
                          text="", variables=dict(wl.variables))
    return parse_topology(doc)


@dataclass
class Run:
    """One point of a workload, from up to result.json."""

    wl: Workload
    point: RunPoint
    output: Path | None
    testbed_name: str | None
    progress: bool
    instance_name: str | None
    link_backend: str
    command: list[str]
    run_dir: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    flow_failures: dict[str, str] = field(default_factory=dict)
    line: ProgressLine | None = None
    topology: Any = None          # as loaded by preflight (None: load it, or attaching)

    def _say(self, message: str) -> None:
        if self.line is not None:
            self.line.message(message)
        else:
            _progress(self.progress, message)

    def _record_process(self, proc: subprocess.Popen, role: str, flow: str, node: str) -> None:
        """Note a process this run started, in raw/processes.json, as soon as it exists."""
        assert self.run_dir is not None
        self.processes.append({"pid": proc.pid, "role": role, "flow": flow, "node": node,
                               "argv": [str(a) for a in proc.args]})
        write_json(self.run_dir / "raw" / "processes.json", self.processes)

    def execute(self) -> Path:
        self.run_dir = make_run_dir(self.wl.name, self.output)
        (self.run_dir / "workload.yaml").write_text(self.wl.rendered_text)
        started = time.time()
        status = "failed"
        results: list[dict[str, Any]] = []
        summary: dict[str, Any] = {}
        error: TestbedError | None = None
        self.manifest = self._static_manifest()
        write_json(self.run_dir / "manifest.json", self.manifest)
        collected: dict[str, Any] = {}
        internal: str | None = None
        try:
            if self.testbed_name:
                import testbed
                cm: contextlib.AbstractContextManager[Any] = contextlib.nullcontext(
                    testbed.attach(self.testbed_name))
            else:
                import testbed
                topo = self.topology if self.topology is not None else _topology_for(self.wl)
                self._say(f"bringing up {getattr(topo, 'name', 'topology')}")
                cm = testbed.up(topo, name=self.instance_name, link_backend=self.link_backend)
            with cm as net:
                self.manifest["testbed"] = {"instance": net.name, "link_backend": net.link_backend,
                                            "attached": bool(self.testbed_name)}
                self._record_conditions(net)
                try:
                    results, summary = self._run_in(net, collected)
                    status = "failed" if any(not r["ok"] for r in results) else "complete"
                finally:
                    self._say("tearing down" if not self.testbed_name else "done")
        except Interrupted as exc:
            status, error = "interrupted", exc
        except Terminated as exc:   # while `up` built: it has rolled back, as it says
            status, error = "interrupted", interrupted(exc.signum)
        except TestbedError as exc:
            error = exc
        except subprocess.CalledProcessError as exc:
            error = WorkloadError(f"command failed: {shlex.join(map(str, exc.cmd))}: "
                                  f"{(exc.stderr or '').strip()[-200:]}")
        except BaseException as exc:  # a bug: still say in result.json why the run failed
            internal = f"internal error: {type(exc).__name__}: {exc}"
            raise
        finally:
            if not results and collected.get("results"):
                results = collected["results"]
            summary = summary or collected.get("summary", {})
            if self.manifest.get("testbed", {}).get("mismatches"):
                summary["suspect"] = True
                summary.setdefault("suspect_reasons", []).append(
                    "the attached testbed's conditions differ from the workload's variables "
                    "(manifest testbed.mismatches)")
            if status != "complete" and results and status != "interrupted":
                status = "failed"
            failed = [f"{r['name']}: {r['error']}" for r in results if not r.get("ok")]
            if error is None and failed:
                error = WorkloadError("flow failed: " + "; ".join(failed) +
                                      f" (partial results in {self.run_dir})")
            write_json(self.run_dir / "manifest.json", self.manifest)
            write_json(self.run_dir / "result.json", {
                "schema_version": SCHEMA_VERSION, "workload": self.wl.name,
                "run_id": self.run_dir.name, "status": status,
                "partial": status != "complete", "error": str(error) if error else internal,
                "suspect": summary.get("suspect", False),
                "suspect_reasons": summary.get("suspect_reasons", []),
                "point": self.point.point, "repetition": self.point.repetition,
                "variables": self.wl.variables,
                "conditions_mismatch": self.manifest.get("testbed", {}).get("mismatches", []),
                "started": started, "finished": time.time(),
                "flows": results, "summary": summary,
            })
        if error is not None:
            raise error
        return self.run_dir

    # ---- manifest -------------------------------------------------------
    def _static_manifest(self) -> dict[str, Any]:
        def version(argv: list[str]) -> str | None:
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                return None
            return (p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr) else None
        import pyroute2
        return {
            "schema_version": SCHEMA_VERSION,
            "command": self.command, "cwd": os.getcwd(),
            "kernel": {"release": platform.release(), "version": platform.version(),
                       "machine": platform.machine(), "available_cc": available_ccs()},
            "host": {"hostname": socket.gethostname(), "cpus": os.cpu_count()},
            "tools": {"testbed": __version__, "python": platform.python_version(),
                      "pyroute2": getattr(pyroute2, "__version__", None),
                      "iperf3": version(["iperf3", "--version"]),
                      "tcpdump": version(["tcpdump", "--version"])},
            "workload": {"name": self.wl.name, "file": str(self.wl.file), "rendered": "workload.yaml",
                         "variables": self.wl.variables, "point": self.point.point,
                         "repetition": self.point.repetition, "seed": self.wl.seed + self.point.index},
            "topology": {"file": str(self.wl.topology_path) if self.wl.topology_path else None,
                         "inline": self.wl.topology_inline},
        }

    def _record_conditions(self, net: Any) -> None:
        """The topology as rendered and each link direction as in force, before the run;
        attached, where the workload's variables disagree with them (warned, loudly)."""
        assert self.run_dir is not None
        rendered = net.deployed.source
        if rendered:
            (self.run_dir / "topology.yaml").write_text(rendered)
        self.manifest["topology"].update({
            "name": net.deployed.topology, "built_from": net.deployed.file,
            "rendered": "topology.yaml" if rendered else None,
            "variables": (dict(self.topology.variables) if self.topology is not None
                          and not self.testbed_name else dict(net.deployed.variables)),
            "links": [{"name": l.name, "forward": l.forward.describe(),
                       "reverse": l.reverse.describe()}
                      for l in net.links]})
        self.manifest["links_before"] = conditions.link_directions(net.deployed, net.state_dir)
        if self.testbed_name and self.wl.variables:
            found = conditions.mismatches(self.wl, _topology_for(self.wl), net.deployed,
                                          self.manifest["links_before"])
            self.manifest["testbed"]["mismatches"] = found
            for message in conditions.messages(found):
                say(sys.stderr, f"testbed: WARNING: {message}: this run is recorded with the "
                    "testbed's links as they are and marked suspect")
        write_json(self.run_dir / "manifest.json", self.manifest)

    def _node_state(self, net: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in net.nodes.values():
            sysctls: dict[str, str | None] = {}
            with node.enter():
                for key in SYSCTLS:
                    try:
                        sysctls[key.replace("/", ".")] = Path("/proc/sys", key).read_text().strip()
                    except OSError:
                        sysctls[key.replace("/", ".")] = None
            qd = qdisc.qdisc_tree(lambda argv, n=node: n.run(argv, check=False).stdout)
            offloads: dict[str, dict[str, str]] = {}
            for iface in node.interfaces:
                text = node.run(["ethtool", "-k", iface.ifname], check=False).stdout
                offloads[iface.ifname] = {k: v for k, v in re.findall(r"^([\w-]+): (\w+)", text, re.M)
                                          if k in OFFLOADS}
            out[node.name] = {"netns": node.netns, "kind": node.kind, "sysctls": sysctls,
                              "qdiscs": qd, "offloads": offloads,
                              "addresses": [str(a) for i in node.interfaces for a in i.addresses]}
        return out

    # ---- the run itself ---------------------------------------------------
    def _check_nodes(self, net: Any) -> None:
        for flow in self.wl.flows:
            for key, node in (("from", flow.src), ("to", flow.dst)):
                if node not in net.nodes:
                    raise ConfigError(f"unknown node {node!r}; the topology has "
                                      f"{', '.join(sorted(net.nodes))}",
                                      file=str(self.wl.file), path=f"{flow.yaml_path}.{key}")
                if net.nodes[node].ipv4 is None:
                    raise ConfigError(f"node {node!r} has no IPv4 address",
                                      file=str(self.wl.file), path=f"{flow.yaml_path}.{key}")

    def _check_reachable(self, net: Any) -> None:
        pairs = {(f.src, f.dst) for f in self.wl.flows}
        for src, dst in sorted(pairs):
            ip = net.nodes[dst].ipv4
            # up to 15 echo requests over 3 s, done at the first reply: one lost to the
            # link's own random loss must not fail the run
            p = net.nodes[src].run(["ping", "-c", "1", "-i", "0.2", "-w", "3", "-I",
                                    net.nodes[src].ipv4, ip], check=False, timeout=10)
            if p.returncode != 0:
                raise WorkloadError(f"{src} cannot reach {dst} ({ip}): ping failed (no reply in "
                                    "3 s); check the topology's links, routes and loss "
                                    "('testbed plan' shows them)")

    def _plans(self, net: Any) -> list[tuple[FlowPlan, Driver]]:
        assert self.run_dir is not None
        plans = []
        for i, flow in enumerate(self.wl.flows):
            plan = FlowPlan(flow=flow, port=BASE_PORT + i, src_ip=net.nodes[flow.src].ipv4,
                            dst_ip=net.nodes[flow.dst].ipv4,
                            seconds=(flow.duration or self.wl.duration).seconds,
                            out_dir=self.run_dir.absolute() / "raw")
            plans.append((plan, DRIVERS[default_driver(flow)]()))
        return plans

    def _bottlenecks(self, net: Any) -> list[tuple[Any, str]]:
        """(node, ifname) pairs to capture on, from the workload's capture interfaces."""
        picks: list[tuple[Any, str]] = []
        emulated = [l for l in net.links if l.emulated]
        for spec in self.wl.capture.interfaces:
            if spec == "bottleneck":
                if not emulated:
                    continue
                rated = [(l.forward.rate.bps, l) for l in emulated if l.forward.rate is not None]
                link = min(rated, key=lambda x: x[0])[1] if rated else emulated[0]
                picks.append((net.nodes[link.a], link.a_ifname))
            elif ":" in spec:
                node, ifname = spec.split(":", 1)
                if node not in net.nodes or ifname not in {i.ifname for i in net.nodes[node].interfaces}:
                    raise ConfigError(f"no interface {spec!r} in the testbed", file=str(self.wl.file),
                                      path="capture.interfaces")
                picks.append((net.nodes[node], ifname))
            elif "-" in spec and all(p in net.nodes for p in spec.split("-", 1)):
                a, b = spec.split("-", 1)
                link = next((l for l in net.links if {l.a, l.b} == {a, b}), None)
                if link is None:
                    raise ConfigError(f"no link between {a} and {b}", file=str(self.wl.file),
                                      path="capture.interfaces")
                picks.append((net.nodes[a], link.a_ifname if link.a == a else link.b_ifname))
            elif spec in net.nodes:
                picks += [(net.nodes[spec], i.ifname) for i in net.nodes[spec].interfaces]
            else:
                raise ConfigError(f"capture interface {spec!r}: write 'bottleneck', 'node', "
                                  "'node:ifname' or 'a-b' (a link)", file=str(self.wl.file),
                                  path="capture.interfaces")
        return picks

    def _wait_listening(self, net: Any, plan: FlowPlan, server: subprocess.Popen) -> None:
        node = net.nodes[plan.flow.dst]
        with node.enter():
            sock = tcpinfo.open_diag_socket()
        proto = socket.IPPROTO_UDP if plan.flow.protocol == "udp" else socket.IPPROTO_TCP
        deadline = time.monotonic() + SERVER_READY_TIMEOUT
        try:
            while time.monotonic() < deadline:
                if server.poll() is not None:
                    raise WorkloadError(
                        f"flow {plan.flow.name}: server on {node.name} port {plan.port} exited "
                        f"(status {server.returncode}) before listening: "
                        f"{_explain(plan.server_out, plan.server_err)}")
                if tcpinfo.listening(sock, plan.port, protocol=proto):
                    return
                time.sleep(0.02)
        finally:
            sock.close()
        raise WorkloadError(f"flow {plan.flow.name}: server on {node.name} port {plan.port} "
                            f"did not listen within {SERVER_READY_TIMEOUT:g}s")

    def _check_ports_free(self, net: Any, plans: list[tuple[FlowPlan, Driver]]) -> None:
        """Refuse to start when another socket already holds a flow's port on its receiver."""
        busy: list[str] = []
        for plan, _ in plans:
            node = net.nodes[plan.flow.dst]
            proto = socket.IPPROTO_UDP if plan.flow.protocol == "udp" else socket.IPPROTO_TCP
            with node.enter():
                sock = tcpinfo.open_diag_socket()
            try:
                if tcpinfo.listening(sock, plan.port, protocol=proto):
                    busy.append(f"flow {plan.flow.name}: {plan.flow.protocol} port {plan.port} on "
                                f"{node.name} is already in use by another socket")
            finally:
                sock.close()
        if busy:
            raise WorkloadError("; ".join(busy) + " (stop what holds it: 'testbed exec "
                                f"{net.name} <node> ss -tulpn' shows it)")

    def _check_servers(self, plans: list[tuple[FlowPlan, Driver]], servers: list[subprocess.Popen],
                       clients: dict[str, subprocess.Popen], elapsed: float) -> None:
        """A server that died (signal or error status) before the run stopped it fails its
        flow: the client is stopped so it writes what it has, and the reason is kept.
        (A one-test iperf3 server exits 0 on its own when its flow is done.)"""
        for (plan, driver), server in zip(plans, servers):
            name = plan.flow.name
            code = server.poll()
            if code is None or code == 0 or name in self.flow_failures:
                continue
            client = clients.get(name)
            how = _exit_how(code)
            self.flow_failures[name] = (f"server on {plan.flow.dst} port {plan.port} (pid "
                                        f"{server.pid}) {how} {elapsed:.1f}s into the run")
            self._say(f"flow {name}: {self.flow_failures[name]}")
            if client is not None:
                driver.stop(client)

    def _run_in(self, net: Any, collected: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        assert self.run_dir is not None
        raw = self.run_dir / "raw"
        self._check_nodes(net)
        self._check_reachable(net)
        self.manifest["nodes_before"] = self._node_state(net)
        write_json(self.run_dir / "manifest.json", self.manifest)
        plans = self._plans(net)
        servers: list[subprocess.Popen] = []
        clients: dict[str, subprocess.Popen] = {}
        captures: list[tuple[subprocess.Popen, Path, str]] = []
        diag: list[tuple[str, socket.socket]] = []
        sampler: tcpinfo.TcpInfoSampler | None = None
        meter: RateMeter | None = None
        qs: qdisc.QdiscSampler | None = None
        hs = hostload.HostLoadSampler(self.wl.sampling.host.seconds)
        t0 = time.monotonic()
        stop_reasons: list[str] = []
        link_schedule = Scheduler.for_network(net)  # the topology's schedule: (may be empty)
        try:
            self._check_ports_free(net, plans)
            for plan, driver in plans:
                proc = driver.start_server(net.nodes[plan.flow.dst], plan)
                self._record_process(proc, "server", plan.flow.name, plan.flow.dst)
                servers.append(proc)
                self._wait_listening(net, plan, proc)
            if self.wl.capture.enabled:
                for node, ifname in self._bottlenecks(net):
                    pcap = raw / f"capture-{node.name}-{ifname}.pcap"
                    captures.append((cap.start_capture(node, ifname, pcap, self.wl.capture.snaplen),
                                     pcap, f"{node.name}:{ifname}"))
                    self._record_process(captures[-1][0], "capture", "", node.name)
            emulated = [l for l in net.links if l.emulated]
            targets: dict[str, list[str]] = {}
            for l in emulated:
                targets.setdefault(l.a, []).append(l.a_ifname)
                targets.setdefault(l.b, []).append(l.b_ifname)
            qs = qdisc.QdiscSampler([(n, net.nodes[n].enter, names) for n, names in targets.items()],
                                    interval=self.wl.sampling.qdisc.seconds)
            for name in sorted({p.flow.src for p, _ in plans if p.flow.protocol == "tcp"}):
                with net.nodes[name].enter():
                    diag.append((name, tcpinfo.open_diag_socket()))
            sampler = tcpinfo.TcpInfoSampler(diag, raw / "tcp_info.spool",
                                             interval=self.wl.sampling.tcp_info.seconds,
                                             ports=frozenset(p.port for p, _ in plans))
            for proc, pcap, label in captures:
                cap.wait_capturing(proc, pcap, label)
            t0 = time.monotonic()
            hs.start(t0)
            qs.start(t0)
            sampler.start()
            link_schedule.start(t0)
            pending = sorted(plans, key=lambda pd: pd[0].flow.start.seconds)
            end_by = t0 + max(p.flow.end_bound(self.wl.duration) for p, _ in plans) + GRACE
            if any(p.flow.size is not None for p, _ in plans):
                end_by += 3 * self.wl.duration.seconds
            self._say(f"running {len(plans)} flow(s), ~{self.wl.planned_seconds:g}s")
            meter = RateMeter(net, plans) if self.line is not None and self.line.enabled else None
            while True:
                now = time.monotonic()
                self._check_servers(plans, servers, clients, now - t0)
                while pending and t0 + pending[0][0].flow.start.seconds <= now:
                    plan, driver = pending.pop(0)
                    if plan.flow.name in self.flow_failures:
                        continue  # its server is gone: starting the client would only add noise
                    clients[plan.flow.name] = driver.start(net.nodes[plan.flow.src], plan)
                    self._record_process(clients[plan.flow.name], "client", plan.flow.name,
                                         plan.flow.src)
                if not pending and all(c.poll() is not None for c in clients.values()):
                    self._check_servers(plans, servers, clients, time.monotonic() - t0)
                    break
                if now > end_by:
                    stop_reasons.append(f"flows still running {end_by - t0:.0f}s after start were stopped")
                    break
                if sampler.error is not None:
                    raise WorkloadError(f"tcp_info sampler failed: {sampler.error}")
                if meter is not None and self.line is not None and self.line.due(now):
                    self.line.show(now, now - t0, meter.rates(now),
                                   sum(c.poll() is None for c in clients.values()))
                time.sleep(0.05)
        finally:
            if meter is not None:
                meter.close()
            stats = sampler.stop() if sampler is not None else None
            if qs is not None:
                qs.stop()
            hs.stop()
            self.manifest["link_schedule"] = link_schedule.stop()
            drivers = {p.flow.name: d for p, d in plans}
            for name, proc in clients.items():
                drivers[name].stop(proc)
            for (plan, driver), proc in zip(plans, servers):
                driver.stop(proc, grace=3.0)
            cap_stats = cap.stop_captures(captures)
            for _, s in diag:
                s.close()
            collected["results"], collected["summary"] = self._collect(
                net, plans, sampler, stats, qs, hs, captures, cap_stats, t0, stop_reasons)
        try:
            from testbed.realize import state
            # a schedule may have changed it
            now = state.Journal(net.name).read_deployed() or net.deployed
            self.manifest["links_after"] = conditions.link_directions(now, net.state_dir)
            if net.link_backend == "userspace":
                # per direction: delay-line and bottleneck counters (drops, marks, sojourn),
                # the engine's timer calibration and release lateness
                self.manifest["link_engine_after"] = enginectl.fresh_status(net.state_dir)
            self.manifest["nodes_after"] = self._node_state(net)
        except (OSError, subprocess.SubprocessError, TestbedError) as exc:
            collected["summary"]["notes"].append(f"could not read node state after the run: {exc}")
        return collected["results"], collected["summary"]

    # ---- afterwards ---------------------------------------------------------
    def _collect(self, net: Any, plans: list[tuple[FlowPlan, Driver]],
                 sampler: tcpinfo.TcpInfoSampler | None, stats: tcpinfo.SamplerStats | None,
                 qs: qdisc.QdiscSampler | None, hs: hostload.HostLoadSampler,
                 captures: list[tuple[subprocess.Popen, Path, str]], cap_stats: dict[str, Any],
                 t0: float, stop_reasons: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        assert self.run_dir is not None
        rows: list[dict[str, Any]] = []
        losses: list[str] = []      # what a collector could not read: the run says so
        if sampler is not None and sampler.spool.exists():
            rows, losses = tcpinfo.decode_spool(sampler.spool.read_bytes(), sampler.labels, t0)
        pcap_flows: dict[str, dict[str, Any]] = {}
        for _, pcap, label in captures:
            found, lost = cap.read_capture(pcap)
            losses += [f"capture {label}: {x}" for x in lost]
            for k, v in found.items():
                v["capture"] = label
                pcap_flows.setdefault(k, v)
        flows_out: list[dict[str, Any]] = []
        ts_rows: list[dict[str, Any]] = []
        for plan, driver in plans:
            res = driver.parse(plan)
            flows_out.append(flow_summary(plan, res, rows, pcap_flows, ts_rows,
                                          self.flow_failures.get(plan.flow.name)))
        write_table(ts_rows, ("flow",) + tcpinfo.CSV_COLUMNS, self.run_dir / "tcp_info.csv")
        if qs is not None:
            write_table(qs.rows, qdisc.CSV_COLUMNS, self.run_dir / "qdisc.csv")
        host_cols = tuple(hs.rows[0].keys()) if hs.rows else ("t", "cpu_max", "cpu_mean", "load1")
        write_table(hs.rows, host_cols, self.run_dir / "host.csv")
        rtt_rows = [{"flow": f["name"], "t": round(t - 0.0, 6), "rtt_ms": r}
                    for f in flows_out for t, r in f.pop("_pcap_rtt_series", [])]
        if rtt_rows:
            write_table(rtt_rows, ("flow", "t", "rtt_ms"), self.run_dir / "pcap_rtt.csv")
        suspect, reasons = hostload.verdict(hs.rows)
        if stats is not None and stats.missed_fraction > 0.05:
            suspect = True
            reasons.append(f"tcp_info sampler missed {stats.missed_fraction:.1%} of its intervals")
        losses += [f"capture {label}: {c['lost']}" for label, c in cap_stats.items() if c["lost"]]
        losses += (qs.losses() if qs is not None else []) + hs.losses()
        if losses:
            suspect = True
            reasons += [f"data lost: {x}" for x in losses]
        goodputs = [f["goodput_bps"] for f in flows_out]
        self.manifest["cc_in_use"] = {f["name"]: f["cc"] for f in flows_out}
        self.manifest["processes"] = self.processes
        self.manifest["collectors"] = {"tcp_info": stats.as_dict() if stats else None,
                                       "capture": cap_stats,
                                       "qdisc_error": str(qs.error) if qs and qs.error else None}
        summary = {
            "flows": len(flows_out), "ok": all(f["ok"] for f in flows_out),
            "goodput_bps_total": sum(goodputs), "jain_fairness": jain_index(goodputs),
            "retransmits_total": sum(f["retransmits"] or 0 for f in flows_out),
            "suspect": suspect, "suspect_reasons": reasons, "notes": stop_reasons + self.errors,
            "data_loss": losses,
            "tcp_info_sampler": stats.as_dict() if stats else None,
            "captures": cap_stats,     # per capture: captured, received by filter, dropped, lost
            "qdisc_drops": qdisc_drops(qs.rows if qs is not None else []),
        }
        return flows_out, summary


def _exit_how(code: int) -> str:
    """'was killed by SIGKILL' or 'exited with status 1', for a Popen return code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _explain(out: Path, err: Path) -> str:
    from testbed.results import read_json
    from testbed.traffic.base import tail
    data, _ = read_json(out)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return tail(err) or tail(out) or "(no output)"
