"""A running testbed as Python objects: ``up``, ``attach``, nodes that run commands.

    with testbed.up("topologies/dumbbell.yaml") as net:
        net["h1"].run(["ping", "-c", "3", "h3"])

``up`` always tears down on leaving the ``with`` block, whatever happens
inside. ``attach`` gives the same objects for an instance already up (from
``testbed up``) and leaves it up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from testbed.emulation import links
from testbed.model import document as loader
from testbed.errors import TestbedError
from testbed.model.topology import Topology, check_instance_name, parse_topology
from testbed.plan.deployed import Deployed
from testbed.plan.planner import make_plan
from testbed.plan.types import Plan, PlannedInterface, PlannedLink, PlannedNode, PlannedRoute
from testbed.realize import state
from testbed.realize.build import Realized, preflight, realize
from testbed.realize.teardown import Teardown, process_start, teardown
from testbed.kernel import netns


def load_topology(path: str | os.PathLike[str], variables: Mapping[str, Any] | None = None,
                  *, use_env: bool = False) -> Topology:
    """Read, template and validate a topology file."""
    return parse_topology(loader.load(path, variables, use_env=use_env))


def plan_for(topology: Topology, name: str | None = None) -> Plan:
    if name is not None:
        check_instance_name(name)
    return make_plan(topology, name)


class Node:
    """One namespace of a running testbed: its planned facts (``planned``) and commands."""

    def __init__(self, network: "Network", planned: PlannedNode) -> None:
        self.network = network
        self.planned = planned

    @property
    def name(self) -> str:
        return self.planned.name

    @property
    def kind(self) -> str:
        return self.planned.kind

    @property
    def netns(self) -> str:
        return self.planned.netns

    @property
    def cc(self) -> str:
        """The congestion control planned for the node (``cc_in_force``: what it got)."""
        return self.planned.cc

    @property
    def interfaces(self) -> tuple[PlannedInterface, ...]:
        return self.planned.interfaces

    @property
    def routes(self) -> tuple[PlannedRoute, ...]:
        return self.planned.routes

    @property
    def ipv4(self) -> str | None:
        return self.planned.ipv4

    @property
    def ipv6(self) -> str | None:
        return self.planned.ipv6

    def __repr__(self) -> str:
        return f"<Node {self.name} ({self.kind}) in {self.netns}>"

    def _preexec(self):
        hosts = self.network.state_dir / "hosts"
        return netns.preexec_into(self.netns, str(hosts) if hosts.exists() else None)

    def run(self, argv: Sequence[str], *, timeout: float | None = None, check: bool = True,
            capture: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` in this node and wait for it. Node names resolve to addresses."""
        _check_argv(argv)
        try:
            return subprocess.run(list(argv), preexec_fn=self._preexec(), timeout=timeout,
                                  check=check, capture_output=capture, text=True, input=input)
        except FileNotFoundError:
            raise TestbedError(f"{argv[0]}: command not found (in node {self.name})") from None

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in this node; it is recorded so ``down``/``clean`` end it."""
        _check_argv(argv)
        try:
            proc = subprocess.Popen(list(argv), preexec_fn=self._preexec(), **kwargs)
        except FileNotFoundError:
            raise TestbedError(f"{argv[0]}: command not found (in node {self.name})") from None
        self.network.record_process(proc.pid)
        return proc

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        """Run the body with the current thread inside this node's namespace."""
        with netns.enter(self.netns):
            yield


def _check_argv(argv: Sequence[str]) -> None:
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("commands are argv lists, e.g. ['ping', '-c', '3', 'h3']")


class Network:
    """A testbed instance that is up. Built from its state file."""

    def __init__(self, deployed: Deployed, *, owned: bool) -> None:
        self.deployed = deployed
        self.name = deployed.instance
        self._owned = owned
        self.nodes: dict[str, Node] = {n: Node(self, p) for n, p in deployed.nodes.items()}

    @property
    def links(self) -> tuple[PlannedLink, ...]:
        """The links with the impairments in force when this Network was made."""
        return self.deployed.links

    @property
    def link_backend(self) -> str | None:
        return self.deployed.link_backend

    def __repr__(self) -> str:
        return f"<Network {self.name}: {len(self.nodes)} nodes, {len(self.links)} links>"

    def __getitem__(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise TestbedError(f"no node {name!r} in testbed {self.name!r} "
                               f"(nodes: {', '.join(sorted(self.nodes))})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            self.down()

    @property
    def state_dir(self) -> Path:
        return state.instance_dir(self.name)

    @property
    def hosts(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "host"]

    def record_process(self, pid: int) -> None:
        start = process_start(pid)
        state.Journal(self.name).record("proc", pid, start if start is not None else 0)

    def down(self) -> Teardown:
        return teardown(self.name)

    def check_links(self) -> None:
        """Raise RealizeError if a user-space part of an emulated link has died."""
        if self.link_backend:
            links.check_alive(self.link_backend, self.deployed.emulated, self.state_dir)


def build(plan: Plan, *, link_backend: str = "auto",
          seed: int | None = None) -> tuple[Network, Realized]:
    """Preflight and realize ``plan``; the result owns nothing (see ``up``)."""
    selection = links.choose(plan, link_backend, seed)
    preflight(plan)
    journal = state.Journal(plan.instance)
    notes: list[str] = list(plan.notes)

    def emulate(plan: Plan, spaces: netns.Namespaces) -> None:
        if selection is not None:
            notes.extend(links.apply(plan, selection, journal.dir))

    realized = realize(plan, journal, after=emulate)
    name = selection.backend.name if selection else None
    deployed = Deployed.of(
        plan, cc_in_force=realized.cc, host_changes=tuple(realized.host_changes),
        link_backend=name, link_backend_reason=selection.reason if selection else None,
        emulated=tuple(links.emulated(name, d, plan.nodes) for d in links.directions(plan))
        if name else (), notes=tuple(notes))
    journal.write_deployed(deployed)
    realized.notes = notes
    return Network(deployed, owned=False), realized


def up(topology: str | os.PathLike[str] | Topology, *, name: str | None = None,
       variables: Mapping[str, Any] | None = None, use_env: bool = False,
       link_backend: str = "auto", seed: int | None = None) -> Network:
    """Bring a topology up; use as a context manager so it always comes down.
    ``variables`` must be ones the file declares or uses (a typo is a ConfigError).
    ``seed``: the userspace link backend's random draws (loss, jitter), for repeatable runs."""
    if not isinstance(topology, Topology) and variables:
        loader.check_topology_file(topology, variables)
    topo = topology if isinstance(topology, Topology) else \
        load_topology(topology, variables, use_env=use_env)
    net, _ = build(plan_for(topo, name), link_backend=link_backend, seed=seed)
    net._owned = True
    return net


def attach(name: str) -> Network:
    """The Network of an instance already up (e.g. from ``testbed up``); ``name`` must
    follow the instance-name rule (a ConfigError otherwise, before any file is read)."""
    deployed = state.Journal(check_instance_name(name, "instance name")).read_deployed()
    if deployed is None:
        up_now = state.instances()
        hint = f" (up: {', '.join(up_now)})" if up_now else " (none is up)"
        raise TestbedError(f"no testbed named {name!r} is up{hint}")
    return Network(deployed, owned=False)
