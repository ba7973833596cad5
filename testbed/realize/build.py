"""Carrying out a plan with netlink, and undoing it.

``realize`` makes namespaces, veth pairs, addresses, routes and sysctls in
that order, journaling each namespace before it exists, and rolls
everything back if any step fails (or SIGINT/SIGTERM/SIGHUP arrive). Undoing is
``testbed.realize.teardown``'s.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

from testbed.errors import PreflightError, RealizeError
from testbed.plan.types import Plan, PlannedNode, ifindex
from testbed.realize import state
from testbed.kernel import netns
from testbed.kernel.rtnl import Rtnl
from testbed.kernel.sysctl import (NetSysctls, available_ccs, read_sysctl, sysctl_path,
                                   write_sysctl)
from testbed.realize.teardown import LOOPBACK, owner_of, teardown
from testbed.signals import signals_deferred, stop_signals_raise

IPV6_EARLY_SYSCTLS = (
    # before any interface exists, so new interfaces inherit them: without duplicate
    # address detection IPv6 works at once (until a link-local address has passed it,
    # a node does not even send neighbour solicitations)
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.accept_dad", "0"),
)


def _sysctl_problems(plan: Plan) -> list[str]:
    """Sysctls that do not exist here, or that are not the namespace's own: a host-wide one
    (``net.ipv4.tcp_allowed_congestion_control``, ``net.core.rmem_max``) is read-only in a
    network namespace, and testbed changes sysctls only inside its namespaces."""
    wanted = {(node.name, key) for node in plan.nodes.values() for key, _ in node.sysctls
              if ".conf." not in key and ".neigh." not in key}  # per-interface: not yet there
    problems = [f"node {n}: sysctl {k} does not exist in this kernel"
                for n, k in sorted(wanted) if not sysctl_path(k).exists()]
    keys = sorted({k for _, k in wanted if sysctl_path(k).exists()})
    if keys:
        probe = subprocess.run(["unshare", "--net", "sh", "-c",
                                'for p; do [ -w "$p" ] || echo "$p"; done', "sh",
                                *map(str, map(sysctl_path, keys))],
                               capture_output=True, text=True, timeout=10)
        host_wide = set(probe.stdout.split())
        problems += [f"node {n}: sysctl {k} is host-wide, not the namespace's own (read-only "
                     "in a network namespace): testbed sets sysctls only inside its namespaces"
                     for n, k in sorted(wanted) if str(sysctl_path(k)) in host_wide]
    return problems


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
        problems += _sysctl_problems(plan)
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
            result.cc, not_yet_up = _configure_nodes(plan, spaces)
            _wait_operational(not_yet_up, spaces)
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
    # an IPv4-only plan leaves IPv6 as the kernel has it: the sysctls are a tenth of
    # the cost of a namespace (the first lookups of /proc/sys/net/ipv6 in it)
    early = IPV6_EARLY_SYSCTLS if uses_ipv6(plan) else ()
    for node in plan.nodes.values():
        journal.record("netns", node.netns)
        with spaces.create(node.netns), Rtnl() as rtnl:
            rtnl.altname(LOOPBACK, node.tag, f"node {node.name}: tagging lo with {node.tag}")
            rtnl.up(LOOPBACK, f"node {node.name}: setting lo up")
            rtnl.commit()
            if early:
                with NetSysctls() as sysctls:
                    for key, value in early:
                        with contextlib.suppress(FileNotFoundError):   # kernels without IPv6
                            sysctls.write(key, value)


def uses_ipv6(plan: Plan) -> bool:
    """Whether any node has an IPv6 address or sets an IPv6 sysctl."""
    return any(address.version == 6 for node in plan.nodes.values()
               for iface in node.interfaces for address in iface.addresses) or \
        any(key.startswith("net.ipv6.") for node in plan.nodes.values()
            for key, _ in node.sysctls)


def _make_links(plan: Plan, spaces: netns.Namespaces) -> None:
    """Every veth pair, the end of the node configured last already up.

    _configure_node sets the other end up, so once a node is configured, all
    its links have both ends up (the nodes configured before it set theirs
    up; those after it had theirs made up): its interfaces are operational
    by then, or shortly after, and need no second visit to be waited for.
    """
    order = {name: position for position, name in enumerate(plan.nodes)}
    fds: dict[str, int] = {}
    try:
        with Rtnl() as rtnl:
            for link in plan.links:
                for node in (link.a, link.b):
                    if node not in fds:
                        fds[node] = os.open(netns.path_of(plan.nodes[node].netns),
                                            os.O_RDONLY | os.O_CLOEXEC)
                a = (link.a, link.a_ifname, ifindex(link.index, 0))
                b = (link.b, link.b_ifname, ifindex(link.index, 1))
                (node, name, index), (peer, peer_name, peer_index) = \
                    (a, b) if order[link.a] > order[link.b] else (b, a)
                rtnl.veth(name, index, fds[node], peer_name, peer_index, fds[peer], link.mtu,
                          f"creating veth {link.a}:{link.a_ifname} <-> {link.b}:{link.b_ifname}",
                          up=True)
            rtnl.commit()
    finally:
        for fd in fds.values():
            os.close(fd)


def _configure_nodes(plan: Plan, spaces: netns.Namespaces
                     ) -> tuple[dict[str, str], list[PlannedNode]]:
    """Configure every node: (congestion control in force by node, nodes with an
    interface not operational yet)."""
    cc: dict[str, str] = {}
    not_yet_up = []
    for node in plan.nodes.values():
        cc[node.name], operational = _configure_node(node, spaces)
        if not operational:
            not_yet_up.append(node)
    return cc, not_yet_up


def _configure_node(node: PlannedNode, spaces: netns.Namespaces) -> tuple[str, bool]:
    """Addresses, routes and sysctls of one node: (congestion control in force, whether
    every interface is operational already)."""
    with spaces.enter(node.netns), Rtnl() as rtnl, NetSysctls() as sysctls:
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
                sysctls.write(key, value)
            except OSError as exc:
                raise RealizeError(f"node {node.name}: setting {key}={value} failed: "
                                   f"{exc.strerror}") from exc
        rtnl.commit()
        in_force = sysctls.read("net.ipv4.tcp_congestion_control")
        operational = _operational(node, rtnl)
    if in_force != node.cc:
        raise RealizeError(f"node {node.name}: asked for congestion control {node.cc!r} but the "
                           f"kernel reports {in_force!r}")
    return in_force, operational


def _operational(node: PlannedNode, rtnl: Rtnl) -> bool:
    """Whether the kernel reports every interface of ``node`` operationally up."""
    states = rtnl.operstates([i.ifindex for i in node.interfaces])
    return all(states[i.ifindex] == "UP" for i in node.interfaces)


def _wait_operational(nodes: list[PlannedNode], spaces: netns.Namespaces,
                      timeout: float = 5.0) -> None:
    """Wait until the kernel reports every interface of ``nodes`` operationally up.

    The kernel turns a veth's carrier on asynchronously (linkwatch), and until
    it has, the device has no working qdisc: packets sent straight after
    ``up`` would be dropped.
    """
    deadline = time.monotonic() + timeout
    pending = [n for n in nodes if n.interfaces]
    while pending:
        still = []
        for node in pending:
            with spaces.enter(node.netns), Rtnl() as rtnl:
                if not _operational(node, rtnl):
                    still.append(node)
        pending = still
        if pending:
            if time.monotonic() > deadline:
                down = [f"{n.name}:{i.ifname}" for n in pending for i in n.interfaces]
                raise RealizeError(f"interfaces did not come up within {timeout:g} s: "
                                   f"{', '.join(down[:10])}")
            time.sleep(0.01)
