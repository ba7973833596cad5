"""What is up, read from the kernel: nodes, interfaces, addresses, routes, cc in force."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.emulation import enginectl
from testbed.errors import TestbedError
from testbed.kernel import netns
from testbed.plan.deployed import Deployed
from testbed.plan.types import PlannedLink, PlannedNode
from testbed.kernel.sysctl import read_sysctl
from testbed.realize import state


def _node_facts(node: PlannedNode, spaces: netns.Namespaces) -> dict[str, Any]:
    facts: dict[str, Any] = {"kind": node.kind, "netns": node.netns, "present": False}
    if not netns.exists(node.netns):
        return facts
    with spaces.enter(node.netns), IPRoute() as ipr:
        facts["present"] = True
        names = {}
        interfaces = []
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME")
            names[link["index"]] = name
            if name == "lo":
                continue
            interfaces.append({"ifname": name, "state": link.get_attr("IFLA_OPERSTATE"),
                               "mtu": link.get_attr("IFLA_MTU"), "addresses": []})
        by_name = {i["ifname"]: i for i in interfaces}
        for addr in ipr.get_addr():
            name = names.get(addr["index"])
            if name in by_name and addr["scope"] == 0:
                by_name[name]["addresses"].append(
                    f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}")
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_routes(family=family, table=254):
                gateway = route.get_attr("RTA_GATEWAY")
                if gateway is None:
                    continue
                dst = route.get_attr("RTA_DST")
                routes.append({"dst": f"{dst}/{route['dst_len']}" if dst else "default",
                               "gateway": gateway, "ifname": names.get(route.get_attr("RTA_OIF"))})
        facts["interfaces"] = interfaces
        facts["routes"] = routes
        facts["cc"] = read_sysctl("net.ipv4.tcp_congestion_control")
        facts["forwarding"] = read_sysctl("net.ipv4.ip_forward") == "1"
    return facts


def _link(deployed: Deployed, link: PlannedLink, journal: state.Journal) -> dict[str, Any]:
    """A link as planned, its impairments as configured (text, as ``testbed plan`` says
    them), plus each direction's impairment in force as fields in base units
    (``impairment``: {} when the direction is not emulated)."""
    # emulation.live brings the link backends (pyroute2, ~0.3 s): only for emulated links
    from testbed.emulation import live
    out: dict[str, Any] = {     # the keys in the order status --json always had
        "a": link.a, "a_ifname": link.a_ifname, "b": link.b, "b_ifname": link.b_ifname,
        "forward": link.forward.describe(), "index": link.index, "mtu": link.mtu,
        "name": link.name, "reverse": link.reverse.describe(), "directions": []}
    for d in link.directions:
        imp = live.configured(deployed, d, journal.dir)
        out["directions"].append({"from": d.sender, "to": d.receiver, "side": d.side,
                                  "impairment": imp.as_fields() if imp is not None else {}})
    return out


def _engine(state_dir: Path) -> dict[str, Any] | None:
    """The link engine of a userspace-backend testbed: pid, alive, lanes (None: none runs)."""
    files = enginectl.EngineFiles.of(state_dir)
    handle = enginectl.read_handle(files)
    if handle is None:
        return None
    lanes = ((enginectl.read_status(files) or {}).get("lanes") or {}).values()
    return {"pid": handle.pid, "alive": enginectl.is_running(handle), "lanes": len(lanes),
            "bottlenecks": sum(1 for l in lanes if l.get("bottleneck") is not None)}


def instance_status(instance: str) -> dict[str, Any]:
    journal = state.Journal(instance)
    try:
        deployed = journal.read_deployed()
        unreadable = None
    except TestbedError as exc:
        deployed, unreadable = None, str(exc)
    if deployed is None:
        return {"name": instance, "complete": False,
                "namespaces": [n for n in journal.namespaces() if netns.exists(n)],
                "note": unreadable or "no state file: an interrupted 'up'? run "
                                      f"'testbed down --name {instance}'"}
    out: dict[str, Any] = {"name": instance, "complete": True, "topology": deployed.topology,
                           "file": deployed.file, "link_backend": deployed.link_backend,
                           "nodes": {}, "links": [_link(deployed, l, journal)
                                                  for l in deployed.links]}
    if deployed.link_backend == "userspace":
        out["link_engine"] = _engine(journal.dir)
    with netns.Namespaces() as spaces:
        for name in sorted(deployed.nodes):    # as status always listed them
            node = deployed.nodes[name]
            with contextlib.suppress(OSError, NetlinkError):
                out["nodes"][name] = _node_facts(node, spaces)
            out["nodes"].setdefault(name, {"kind": node.kind, "netns": node.netns,
                                           "present": False})
    return out


def all_status(name: str | None = None) -> dict[str, Any]:
    names = [name] if name else state.instances()
    return {"instances": [instance_status(n) for n in names],
            "host_changes": state.host_changes()}


def render(status: dict[str, Any]) -> str:
    lines = []
    if not status["instances"]:
        return "no testbed is up"
    for inst in status["instances"]:
        if not inst["complete"]:
            lines.append(f"{inst['name']}: incomplete ({inst['note']})")
            continue
        backend_name = inst.get("link_backend") or "none (no emulated links)"
        lines.append(f"testbed {inst['name']} (topology {inst['topology']} from {inst['file']}), "
                     f"link backend: {backend_name}")
        lines.append(f"  {'node':<10} {'kind':<7} {'cc':<7} {'interface':<10} {'state':<8} addresses")
        for node, facts in inst["nodes"].items():
            if not facts["present"]:
                lines.append(f"  {node:<10} {facts['kind']:<7} MISSING namespace {facts['netns']}")
                continue
            first = True
            for iface in facts["interfaces"] or [{"ifname": "-", "state": "", "addresses": []}]:
                head = f"  {node:<10} {facts['kind']:<7} {facts['cc']:<7}" if first else " " * 27
                lines.append(f"{head} {iface['ifname']:<10} {iface['state'] or '':<8} "
                             f"{', '.join(iface['addresses'])}")
                first = False
            for route in facts["routes"]:
                lines.append(f"{' ' * 27} route {route['dst']} via {route['gateway']} "
                             f"dev {route['ifname']}")
        for link in inst["links"]:
            if link["forward"] != "none" or link["reverse"] != "none":
                lines.append(f"  link {link['a']}->{link['b']}: {link['forward']}")
                lines.append(f"  link {link['b']}->{link['a']}: {link['reverse']}")
        engine = inst.get("link_engine")
        if engine is not None:
            lines.append(f"  link engine: pid {engine['pid']}, "
                         f"{'running' if engine['alive'] else 'DEAD: emulated links drop'}, "
                         f"{engine['lanes']} directions, {engine['bottlenecks']} of them "
                         "bottlenecks (testbed link show: counters)")
    changes = status.get("host_changes") or {}
    for key, entry in changes.items():
        users = ", ".join(entry.get("users") or [])
        if "mounted" in entry:        # tracefs, mounted for runs' tcp events
            what = f"mounted {entry['mounted']}"
        else:
            what = f"{' '.join(entry['original'])} + {' '.join(entry['added'])}"
        lines.append(f"host change: {key} {what} (for {users}; restored when the last of "
                     "them goes down)")
    return "\n".join(lines)
