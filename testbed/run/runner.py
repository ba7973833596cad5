"""One point of a workload, from up (or attach) to result.json.

Inside a point: up/attach -> reachability -> manifest "before" -> servers
(each waited on until it listens) -> captures -> TCP events -> tcp_info,
qdisc, host and link schedule on one clock t0 -> clients at their offsets ->
wait -> stop all -> parse -> manifest "after" and result.json. Every process and collector
registers its stop on one ExitStack as soon as it starts, so an error or a
signal stops exactly what was started; whatever was gathered is kept and the
run marked."""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

from testbed.collect.hostload import HostLoadSampler
from testbed.emulation import enginectl
from testbed.emulation.scheduler import Scheduler
from testbed.errors import Interrupted, TestbedError, WorkloadError
from testbed.instance.network import Network, attach, up
from testbed.realize import state
from testbed.results import SCHEMA_VERSION, make_run_dir, write_json
from testbed.run import conditions, manifest
from testbed.run.collectors import Collectors
from testbed.run.flows import Plans, check_ports_free, check_reachable, flow_plans, \
    server_failures, wait_listening
from testbed.run.gather import Gathered, gather
from testbed.run.preflight import Prepared, topology_for
from testbed.run.progress import ProgressLine, RateMeter
from testbed.signals import Terminated
from testbed.traffic.base import CONNECT_TIMEOUT
from testbed.workload import RunPoint, Workload
from testbed.workload.matrix import Matrix

# past a flow's planned end before it is stopped: a handshake may take CONNECT_TIMEOUT first
GRACE = CONNECT_TIMEOUT + 10.0


def interrupted(signum: int) -> Interrupted:
    """The error a run stopped by ``signum`` ends with; its exit code is the shell's."""
    exc = Interrupted(f"interrupted by {signal.Signals(signum).name}; "
                      "partial results are kept and the testbed is torn down")
    exc.exit_code = 128 + signum        # 130 for Ctrl-C, 143 SIGTERM, 129 SIGHUP, as a shell says
    return exc


@dataclass
class Outcome:
    """How a point's run ended, as result.json says it."""

    started: float
    status: str = "failed"
    error: TestbedError | None = None
    internal: str | None = None
    gathered: Gathered | None = None


@dataclass
class PointRun:
    """One point of a workload (one repetition of one set of variables), from up to
    result.json. ``prepared`` is what preflight found for it."""

    wl: Workload
    point: RunPoint
    prepared: Prepared
    matrix: Matrix
    output: Path | None
    testbed_name: str | None
    instance_name: str | None
    link_backend: str
    command: list[str]
    line: ProgressLine
    run_dir: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)
    flow_failures: dict[str, str] = field(default_factory=dict)
    stop_reasons: list[str] = field(default_factory=list)

    def _record_process(self, proc: subprocess.Popen, role: str, flow: str, node: str) -> None:
        """Note a process this run started, in raw/processes.json, as soon as it exists."""
        assert self.run_dir is not None
        self.processes.append({"pid": proc.pid, "role": role, "flow": flow, "node": node,
                               "argv": [str(a) for a in proc.args]})
        write_json(self.run_dir / "raw" / "processes.json", self.processes)

    def _write_manifest(self) -> None:
        assert self.run_dir is not None
        write_json(self.run_dir / "manifest.json", self.manifest)

    def execute(self) -> Path:
        """Run the point; return its directory, or raise after writing it (kept, marked)."""
        self.run_dir = make_run_dir(self.wl.name, self.output)
        (self.run_dir / "workload.yaml").write_text(self.wl.rendered_text)
        outcome = Outcome(started=time.time())
        self.manifest = manifest.static_manifest(self.wl, self.point, self.command, self.matrix)
        self._write_manifest()
        for note in self.prepared.notes:      # e.g. a router as a flow's end: said, and kept
            self.line.message(f"note: {note}")
            self.stop_reasons.append(note)
        try:
            self._run(outcome)
        except Interrupted as exc:
            outcome.status, outcome.error = "interrupted", exc
        except Terminated as exc:   # while `up` built: it has rolled back, as it says
            outcome.status, outcome.error = "interrupted", interrupted(exc.signum)
        except TestbedError as exc:
            outcome.error = exc
        except subprocess.CalledProcessError as exc:
            outcome.error = WorkloadError(f"command failed: {shlex.join(map(str, exc.cmd))}: "
                                          f"{(exc.stderr or '').strip()[-200:]}")
        except BaseException as exc:  # a bug: still say in result.json why the run failed
            outcome.internal = f"internal error: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._finish(outcome)
        if outcome.error is not None:
            raise outcome.error
        return self.run_dir

    def _testbed(self) -> ContextManager[Network]:
        if self.testbed_name:
            return contextlib.nullcontext(attach(self.testbed_name))
        topo = self.prepared.topology if self.prepared.topology is not None \
            else topology_for(self.wl)
        self.line.message(f"bringing up {getattr(topo, 'name', 'topology')}")
        return up(topo, name=self.instance_name, link_backend=self.link_backend,
                  seed=self.point.seed)

    def _run(self, outcome: Outcome) -> None:
        with self._testbed() as net:
            self.manifest["testbed"] = {"instance": net.name, "link_backend": net.link_backend,
                                        "attached": bool(self.testbed_name)}
            self._record_conditions(net)
            try:
                self._run_in(net, outcome)
                assert outcome.gathered is not None
                outcome.status = "failed" if any(not r["ok"] for r in outcome.gathered.flows) \
                    else "complete"
            finally:
                self.line.message("tearing down" if not self.testbed_name else "done")

    def _record_conditions(self, net: Network) -> None:
        assert self.run_dir is not None
        attached = bool(self.testbed_name)
        variables = dict(net.deployed.variables) if attached or self.prepared.topology is None \
            else dict(self.prepared.topology.variables)
        expected = topology_for(self.wl) if attached and self.wl.variables else None
        manifest.record_conditions(self.manifest, self.run_dir, net, variables, expected, self.wl)
        self._write_manifest()

    def _finish(self, outcome: Outcome) -> None:
        """Write manifest.json and result.json, whatever happened."""
        assert self.run_dir is not None
        gathered = outcome.gathered
        results = gathered.flows if gathered else []
        summary = gathered.summary if gathered else {}
        if self.manifest.get("testbed", {}).get("mismatches"):
            summary["suspect"] = True
            summary.setdefault("suspect_reasons", []).append(
                "the attached testbed's conditions differ from the workload's variables "
                "(manifest testbed.mismatches)")
        if outcome.status != "complete" and results and outcome.status != "interrupted":
            outcome.status = "failed"
        failed = [f"{r['name']}: {r['error']}" for r in results if not r.get("ok")]
        if outcome.error is None and failed:
            outcome.error = WorkloadError("flow failed: " + "; ".join(failed) +
                                          f" (partial results in {self.run_dir})")
        self._write_manifest()
        error = str(outcome.error) if outcome.error else outcome.internal
        write_json(self.run_dir / "result.json", {
            "schema_version": SCHEMA_VERSION, "workload": self.wl.name,
            "run_id": self.run_dir.name, "status": outcome.status,
            "partial": outcome.status != "complete", "error": error,
            "suspect": summary.get("suspect", False),
            "suspect_reasons": summary.get("suspect_reasons", []),
            "point": self.point.point, "repetition": self.point.repetition,
            "variables": self.wl.variables,
            "conditions_mismatch": self.manifest.get("testbed", {}).get("mismatches", []),
            "started": outcome.started, "finished": time.time(),
            "flows": results, "summary": summary,
        })

    # ---- the run itself ---------------------------------------------------
    def _run_in(self, net: Network, outcome: Outcome) -> None:
        assert self.run_dir is not None
        raw = self.run_dir / "raw"
        check_reachable(net, self.wl)
        self.manifest["nodes_before"] = manifest.node_state(net)
        self._write_manifest()
        plans = flow_plans(self.wl, net, raw)
        col = Collectors(raw, HostLoadSampler(self.wl.sampling.host.seconds))
        t0 = time.monotonic()
        try:
            with contextlib.ExitStack() as stack:
                servers, clients = self._start(net, plans, col, stack)
                t0 = self._start_clock(net, col, stack)
                self._drive(net, plans, servers, clients, col, t0, stack)
        finally:
            outcome.gathered = gather(self.run_dir, plans, col, t0, self.flow_failures,
                                      self.stop_reasons,
                                      self.manifest.get("clock", {}).get("t0_epoch"))
            self.manifest.update(outcome.gathered.manifest)
            self.manifest["processes"] = self.processes
        self._record_after(net, outcome.gathered)

    def _start(self, net: Network, plans: Plans, col: Collectors, stack: contextlib.ExitStack
               ) -> tuple[list[subprocess.Popen], dict[str, subprocess.Popen]]:
        """Servers (each listening), captures, then the kernel's TCP events; stops registered
        so that clients stop first, then servers, and captures last (they see the flows'
        last packets)."""
        check_ports_free(net, plans)
        stack.callback(col.stop_captures)
        servers: list[subprocess.Popen] = []
        for plan, driver in plans:
            proc = driver.start_server(net.nodes[plan.flow.dst], plan)
            self._record_process(proc, "server", plan.flow.name, plan.flow.dst)
            servers.append(proc)
            stack.callback(driver.stop, proc, grace=3.0)
            wait_listening(net, plan, proc)
        clients: dict[str, subprocess.Popen] = {}
        drivers = {p.flow.name: d for p, d in plans}

        def stop_clients() -> None:
            for name, proc in clients.items():
                drivers[name].stop(proc)
        stack.callback(stop_clients)
        if self.wl.capture.enabled:
            col.start_captures(net, self.prepared.captures, self.wl.capture.snaplen,
                               self._record_process)
        col.prepare_samplers(net, plans, self.wl, stack)
        assert self.run_dir is not None
        col.start_tcp_events(net, self.run_dir.name, plans, self.wl, stack)
        return servers, clients

    def _start_clock(self, net: Network, col: Collectors, stack: contextlib.ExitStack) -> float:
        """t0, and the samplers and the topology's link schedule started on it."""
        # the topology's schedule, then the workload's own (either may be empty)
        schedule = Scheduler(net.name, net.deployed.schedule + self.prepared.schedule)
        stack.callback(self._stop_schedule, schedule)
        t0 = time.monotonic()
        # one clock: every CSV counts seconds from t0; captures (epoch times) are converted
        # with t0_epoch (analysis/clock.py)
        self.manifest["clock"] = {"t0_monotonic": t0, "t0_epoch": time.time()}
        col.start_samplers(t0, stack)
        schedule.start(t0)
        return t0

    def _stop_schedule(self, schedule: Scheduler) -> None:
        self.manifest["link_schedule"] = schedule.stop()

    def _drive(self, net: Network, plans: Plans, servers: list[subprocess.Popen],
               clients: dict[str, subprocess.Popen], col: Collectors, t0: float,
               stack: contextlib.ExitStack) -> None:
        """Start each client at its offset; return when all are done or the time is up."""
        pending = sorted(plans, key=lambda pd: pd[0].flow.start.seconds)
        end_by = t0 + max(p.flow.end_bound(self.wl.duration) for p, _ in plans) + GRACE
        if any(p.flow.size is not None for p, _ in plans):
            end_by += 3 * self.wl.duration.seconds
        self.line.message(f"running {len(plans)} flow(s), ~{self.wl.planned_seconds:g}s")
        meter = RateMeter(net, plans) if self.line.enabled else None
        if meter is not None:
            stack.callback(meter.close)
        while True:
            now = time.monotonic()
            self._note_dead_servers(plans, servers, clients, now - t0)
            while pending and t0 + pending[0][0].flow.start.seconds <= now:
                plan, driver = pending.pop(0)
                if plan.flow.name in self.flow_failures:
                    continue  # its server is gone: starting the client would only add noise
                clients[plan.flow.name] = driver.start(net.nodes[plan.flow.src], plan)
                self._record_process(clients[plan.flow.name], "client", plan.flow.name,
                                     plan.flow.src)
            if not pending and all(c.poll() is not None for c in clients.values()):
                self._note_dead_servers(plans, servers, clients, time.monotonic() - t0)
                return
            if now > end_by:
                self.stop_reasons.append(
                    f"flows still running {end_by - t0:.0f}s after start were stopped")
                return
            problem = col.check()
            if problem is not None:
                raise WorkloadError(problem)
            if meter is not None and self.line.due(now):
                self.line.show(now, now - t0, meter.rates(now),
                               sum(c.poll() is None for c in clients.values()))
            time.sleep(0.05)

    def _note_dead_servers(self, plans: Plans, servers: list[subprocess.Popen],
                           clients: dict[str, subprocess.Popen], elapsed: float) -> None:
        """A server that died before the run stopped it fails its flow: the client is
        stopped so it writes what it has, and the reason is kept."""
        drivers = {p.flow.name: d for p, d in plans}
        for name, why in server_failures(plans, servers, self.flow_failures, elapsed).items():
            self.flow_failures[name] = why
            self.line.message(f"flow {name}: {why}")
            if name in clients:
                drivers[name].stop(clients[name])

    def _record_after(self, net: Network, gathered: Gathered) -> None:
        """Each link direction and node as they are after the run (a schedule may have
        changed them); a failure to read them is a note, not a failed run."""
        try:
            now = state.Journal(net.name).read_deployed() or net.deployed
            self.manifest["links_after"] = conditions.link_directions(now, net.state_dir)
            if net.link_backend == "userspace":
                # per direction: delay-line and bottleneck counters (drops, marks, sojourn),
                # the engine's timer calibration and release lateness
                self.manifest["link_engine_after"] = enginectl.fresh_status(net.state_dir)
            self.manifest["nodes_after"] = manifest.node_state(net)
        except (OSError, subprocess.SubprocessError, TestbedError) as exc:
            gathered.summary["notes"].append(f"could not read node state after the run: {exc}")
