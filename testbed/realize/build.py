"""Carrying out a plan with netlink, and undoing it.

``realize`` makes namespaces, veth pairs, addresses, routes and sysctls in
that order, journaling each namespace before it exists, and rolls
everything back if any step fails (or SIGINT/SIGTERM/SIGHUP arrive). Undoing is
``testbed.realize.teardown``'s.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from testbed.errors import PreflightError, RealizeError
from testbed.plan.types import Plan, PlannedNode, ifindex
from testbed.realize import state
from testbed.kernel import netns
from testbed.kernel.rtnl import Rtnl
from testbed.kernel.sysctl import available_ccs, read_sysctl, sysctl_path, write_sysctl
from testbed.realize.teardown import LOOPBACK, owner_of, teardown
# instance/network.py still takes these two from here, until it imports realize.teardown
from testbed.realize.teardown import Teardown, process_start as _proc_start  # noqa: F401
from testbed.signals import signals_deferred, stop_signals_raise

EARLY_SYSCTLS = (
    # before any interface exists, so new interfaces inherit them
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.accept_dad", "0"),
)


def preflight(plan: Plan) -> None:
    """Everything that can fail before the first change, reported at once."""
    problems = []
    if os.geteuid() != 0:
        problems.append("testbed needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to build "
                        "namespaces: run it as root (in a root shell, or with sudo)")
    else:
        available = available_ccs()
        for cc in plan.ccs:
            if cc not in available:
                problems.append(f"congestion control {cc!r} is not available in this kernel "
                                f"(available: {', '.join(available)}); try `modprobe tcp_{cc}`")
        for node in plan.nodes.values():
            for key, _ in node.sysctls:
                if ".conf." in key or ".neigh." in key:
                    continue      # per-interface keys exist only once the interface does
                if not sysctl_path(key).exists():
                    problems.append(f"node {node.name}: sysctl {key} does not exist in this kernel")
        taken = [n.netns for n in plan.nodes.values() if netns.exists(n.netns)]
        foreign = {name: owner for name in taken
                   if (owner := owner_of(name)) not in (None, plan.instance)}
        ours = [name for name in taken if name not in foreign]
        if ours:
            problems.append(f"instance {plan.instance!r} is already up ({len(ours)} of its "
                            f"namespaces exist, e.g. {ours[0]}): run `testbed down --name "
                            f"{plan.instance}` first, or choose another --name")
        for name, owner in sorted(foreign.items()):
            problems.append(f"namespace {name}, needed by this topology, belongs to instance "
                            f"{owner!r} (instance and node names meet at '-'): choose another "
                            "--name, or take that instance down")
        if state.instance_dir(plan.instance).exists() and not taken:
            problems.append(f"instance {plan.instance!r} has a leftover state directory "
                            f"{state.instance_dir(plan.instance)}: run `testbed down --name "
                            f"{plan.instance}`")
    if problems:
        raise PreflightError("cannot bring the testbed up:\n  - " + "\n  - ".join(problems))


@dataclass
class Realized:
    """What ``realize`` reports back: the cc read back from each node, host changes."""

    cc: dict[str, str] = field(default_factory=dict)
    host_changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def realize(plan: Plan, journal: state.Journal,
            after: Callable[[Plan, netns.Namespaces], None] | None = None) -> Realized:
    """Make ``plan`` real. On any failure or signal, undo everything and re-raise.

    ``after`` runs once the topology exists (e.g. to apply link emulation),
    still under the same rollback.
    """
    with stop_signals_raise():
        return _realize(plan, journal, after)


def _realize(plan: Plan, journal: state.Journal,
             after: Callable[[Plan, netns.Namespaces], None] | None) -> Realized:
    started = time.monotonic()
    result = Realized()
    journal.open()
    spaces = netns.Namespaces()
    try:
        try:
            result.host_changes = state.allow_congestion_controls(plan.instance, list(plan.ccs))
            (journal.dir / "hosts").write_text(plan.hosts_file())
            _make_namespaces(plan, journal, spaces)
            _make_links(plan, spaces)
            for node in plan.nodes.values():
                result.cc[node.name] = _configure_node(node, spaces)
            _wait_operational(plan, spaces)
            if after is not None:
                after(plan, spaces)
        except BaseException as exc:
            with signals_deferred():
                # a signal can land between a setns and its undo: be home first
                spaces.go_home()
                teardown(plan.instance)
            if isinstance(exc, (KeyboardInterrupt, RealizeError, PreflightError)):
                raise
            # pyroute2 (used by link emulation) costs 0.25 s to import: only on this path
            from pyroute2.netlink.exceptions import NetlinkError
            if isinstance(exc, (OSError, NetlinkError)):
                raise RealizeError(f"bringing up {plan.instance!r} failed: {exc}; "
                                   "everything made so far was removed") from exc
            raise
    finally:
        spaces.close()
    result.seconds = time.monotonic() - started
    return result


def _make_namespaces(plan: Plan, journal: state.Journal, spaces: netns.Namespaces) -> None:
    for node in plan.nodes.values():
        journal.record("netns", node.netns)
        with spaces.create(node.netns), Rtnl() as rtnl:
            rtnl.altname(LOOPBACK, node.tag, f"node {node.name}: tagging lo with {node.tag}")
            rtnl.up(LOOPBACK, f"node {node.name}: setting lo up")
            rtnl.commit()
            for key, value in EARLY_SYSCTLS:
                with contextlib.suppress(FileNotFoundError):   # kernels without IPv6
                    write_sysctl(key, value)


def _make_links(plan: Plan, spaces: netns.Namespaces) -> None:
    fds: dict[str, int] = {}
    try:
        with Rtnl() as rtnl:
            for link in plan.links:
                for node in (link.a, link.b):
                    if node not in fds:
                        fds[node] = os.open(netns.path_of(plan.nodes[node].netns),
                                            os.O_RDONLY | os.O_CLOEXEC)
                rtnl.veth(link.a_ifname, ifindex(link.index, 0), fds[link.a],
                          link.b_ifname, ifindex(link.index, 1), fds[link.b], link.mtu,
                          f"creating veth {link.a}:{link.a_ifname} <-> {link.b}:{link.b_ifname}")
            rtnl.commit()
    finally:
        for fd in fds.values():
            os.close(fd)


def _configure_node(node: PlannedNode, spaces: netns.Namespaces) -> str:
    with spaces.enter(node.netns):
        with Rtnl() as rtnl:
            oif = {i.ifname: i.ifindex for i in node.interfaces}
            for iface in node.interfaces:
                for addr in iface.addresses:
                    rtnl.address(iface.ifindex, addr, f"node {node.name}: adding {addr} "
                                 f"to {iface.ifname}")
                rtnl.up(iface.ifindex, f"node {node.name}: setting {iface.ifname} up")
            for route in node.routes:
                rtnl.route(route.dst, route.gateway, oif[route.ifname],
                           f"node {node.name}: route {route}")
            # sysctls before routes are committed would not matter; forwarding first
            for key, value in node.sysctls:
                try:
                    write_sysctl(key, value)
                except OSError as exc:
                    raise RealizeError(f"node {node.name}: setting {key}={value} failed: "
                                       f"{exc.strerror}") from exc
            rtnl.commit()
        in_force = read_sysctl("net.ipv4.tcp_congestion_control")
    if in_force != node.cc:
        raise RealizeError(f"node {node.name}: asked for congestion control {node.cc!r} but the "
                           f"kernel reports {in_force!r}")
    return in_force


def _wait_operational(plan: Plan, spaces: netns.Namespaces, timeout: float = 5.0) -> None:
    """Wait until the kernel reports every interface operationally up.

    The kernel turns a veth's carrier on asynchronously (linkwatch), and until
    it has, the device has no working qdisc: packets sent straight after
    ``up`` would be dropped.
    """
    deadline = time.monotonic() + timeout
    pending = [n for n in plan.nodes.values() if n.interfaces]
    while pending:
        still = []
        for node in pending:
            with spaces.enter(node.netns), Rtnl() as rtnl:
                states = rtnl.link_states()
            if any(states.get(i.ifindex) != "UP" for i in node.interfaces):
                still.append(node)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                down = [f"{n.name}:{i.ifname}" for n in pending for i in n.interfaces]
                raise RealizeError(f"interfaces did not come up within {timeout:g} s: "
                                   f"{', '.join(down[:10])}")
            time.sleep(0.01)
