"""Everything a workload's runs need checked before anything starts, all
problems at once (STYLE.md 7): each flow's nodes exist and have IPv4, each
driver is known and its tool installed, each congestion control is in the
kernel, each capture interface exists, and (attaching) the testbed has the
conditions the workload's variables name.

The topology is loaded and planned (pure), or the attached testbed's state
read, so a flow naming a node it lacks is an input error here, not after
``up``. These are the only node checks of a run: it never repeats them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from testbed.collect import capture as cap
from testbed.emulation import links
from testbed.errors import ConfigError, PreflightError
from testbed.instance.network import Network, attach, load_topology, plan_for
from testbed.kernel.sysctl import available_ccs
from testbed.model import document
from testbed.model.topology import parse_topology
from testbed.plan.deployed import Deployed
from testbed.run import conditions
from testbed.run.capture import CapturePoint, capture_points
from testbed.traffic import DRIVERS, default_driver
from testbed.workload import Flow, Workload

Problem = tuple[str, "int | None", str]     # (YAML path, line, message)


@dataclass(frozen=True)
class Prepared:
    """What preflight found for one point: its topology (None attaching), where the
    workload's variables disagree with an attached testbed (``conditions.mismatches``),
    and the interfaces its capture names."""

    topology: Any
    mismatches: list[dict[str, Any]]
    captures: list[CapturePoint] = field(default_factory=list)
    schedule: tuple[Any, ...] = ()      # the workload's own link schedule (ScheduleEntry)
    notes: list[str] = field(default_factory=list)      # for the user, and the result


def topology_for(wl: Workload) -> Any:
    """The workload's topology, from its file or inline, with the workload's variables."""
    if wl.topology_path is not None:
        return load_topology(wl.topology_path, wl.variables)
    doc = document.Document(file=f"{wl.file} (topology:)", data=wl.topology_inline, lines={},
                            text="", variables=dict(wl.variables))
    return parse_topology(doc)


def _emulation_problems(wl: Workload, topo: Any, instance_name: str | None,
                        link_backend: str) -> list[str]:
    """What the link backend cannot emulate at this point (``links.choose``, as ``up``
    would find it), found before the first point runs."""

    try:
        links.choose(plan_for(topo, instance_name), link_backend)
    except PreflightError as exc:
        where = ", ".join(f"{k}={v}" for k, v in wl.variables.items()) or wl.name
        return [f"at {where}: {exc}"]
    return []


def planned(topo: Any, instance_name: str | None) -> Network:
    """The Network the topology would become: its nodes and addresses, from the plan (pure)."""
    return Network(Deployed.of(plan_for(topo, instance_name)), owned=False)


def workload_lines(wl: Workload) -> dict[str, int]:
    """YAML path -> line of the workload as rendered (the loader keeps the lines true)."""
    try:
        return document.parse_yaml(wl.rendered_text, str(wl.file))[1]
    except ConfigError:
        return {}


def preflight(workloads: list[Workload], *, testbed_name: str | None = None,
              instance_name: str | None = None, allow_mismatch: bool = False,
              link_backend: str = "auto") -> list[Prepared]:
    """Check every point; return what each needs to run.

    Problems with the workload file (nodes, drivers, congestion controls, capture
    interfaces) raise one ``ConfigError`` (exit 2) naming the file, the first problem's
    YAML path and line and the others after it; a host that lacks a tool raises
    ``PreflightError``. Attaching, a workload whose variables feed the topology with
    values the testbed does not have is refused (ConfigError) unless ``allow_mismatch``:
    its runs would be filed under conditions they did not have. With it they run,
    warned about and marked suspect.
    """
    problems: list[Problem] = []
    host: list[str] = []
    ccs = available_ccs()
    attached = attach(testbed_name) if testbed_name else None
    live_dirs = conditions.link_directions(attached.deployed, attached.state_dir) \
        if attached else []
    prepared: list[Prepared] = []
    emulation: list[str] = []
    for wl in workloads:
        lines = workload_lines(wl)

        def bad(path: str, message: str) -> None:
            problems.append((path, lines.get(path) or lines.get(path.rsplit(".", 1)[0]), message))

        if attached is None:
            topo = topology_for(wl)
            net, whose = planned(topo, instance_name), f"the topology {topo.name!r} has"
            emulation += _emulation_problems(wl, topo, instance_name, link_backend)
        else:
            topo, net, whose = None, attached, f"testbed {testbed_name!r} has"
        found = conditions.mismatches(wl, topology_for(wl), attached.deployed, live_dirs) \
            if attached is not None and wl.variables else []
        for flow in wl.flows:
            host += _check_flow(wl, flow, net, whose, ccs, bad)
        model = topo if topo is not None else topology_for(wl)
        prepared.append(Prepared(topo, found, _check_capture(wl, net, bad, host),
                                 wl.schedule_entries(model.links, len(model.schedule)),
                                 wl.router_notes({n: node.kind for n, node in net.nodes.items()})))
    _raise_problems(problems, list(dict.fromkeys(host)), str(workloads[0].file))
    if emulation:    # e.g. a sweep over aqm whose last point this backend cannot run
        raise PreflightError("no run was started: " + "\n".join(dict.fromkeys(emulation)))
    _refuse_mismatches(prepared, testbed_name, allow_mismatch, str(workloads[0].file))
    return prepared


def _check_flow(wl: Workload, flow: Flow, net: Any, whose: str, ccs: list[str],
                bad: Callable[[str, str], None]) -> list[str]:
    """Report a flow's input problems through ``bad``; return what the host lacks for it."""
    for key, node in (("from", flow.src), ("to", flow.dst)):
        if node not in net.nodes:
            bad(f"{flow.yaml_path}.{key}", f"unknown node {node!r}; {whose} "
                f"{', '.join(sorted(net.nodes))}")
        elif net.nodes[node].ipv4 is None:
            bad(f"{flow.yaml_path}.{key}", f"node {node!r} has no IPv4 address")
    name = default_driver(flow)
    if name not in DRIVERS:
        bad(f"{flow.yaml_path}.driver", f"unknown driver {name!r} (known: {', '.join(DRIVERS)})")
        return []
    driver = DRIVERS[name]()
    missing = driver.host_problems()
    for p in driver.check(flow):
        if p not in missing:
            bad(f"{flow.yaml_path}.driver" if flow.driver else flow.yaml_path, p)
    if flow.cc and ccs and flow.cc not in ccs:
        bad(f"{flow.yaml_path}.cc", f"congestion control {flow.cc!r} is not available in "
            f"this kernel (available: {' '.join(ccs)}); try 'modprobe tcp_{flow.cc}' or "
            "choose one of those")
    return [f"{wl.file.name}: {flow.yaml_path}: {p}" for p in missing]


def _check_capture(wl: Workload, net: Any, bad: Callable[[str, str], None],
                   host: list[str]) -> list[CapturePoint]:
    if not wl.capture.enabled:
        return []
    host += [f"{wl.file.name}: {p}" for p in cap.tcpdump_check()]
    points, problems = capture_points(wl.capture.interfaces, net)
    for i, problem in problems:
        bad(f"capture.interfaces[{i}]", problem)
    return points


def _raise_problems(problems: list[Problem], host: list[str], file: str) -> None:
    if problems:
        unique = list(dict.fromkeys(problems))
        (path, line, message), rest = unique[0], unique[1:]
        also = [f"{p} (line {n}): {m}" if n else f"{p}: {m}" for p, n, m in rest] + host
        raise ConfigError(message + "".join(f"; also {a}" for a in also),
                          file=file, path=path, line=line)
    if host:
        raise PreflightError("; ".join(host))


def _refuse_mismatches(prepared: list[Prepared], testbed_name: str | None, allow_mismatch: bool,
                       file: str) -> None:
    wrong = [m for p in prepared for m in p.mismatches]
    if not wrong or allow_mismatch:
        return
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
        "the runs are then marked suspect)", file=file, path="variables")
