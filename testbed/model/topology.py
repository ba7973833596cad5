"""The topology model: nodes, links and addressing, validated as a whole.

``parse_topology`` turns a loaded YAML document into frozen dataclasses or
raises one ``ConfigError`` naming the file, the YAML path and the line.
Everything that can be checked without the kernel is checked here: unknown
keys, unsafe or overlong names, dangling link ends, duplicate addresses,
hosts that cannot reach each other. No I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from testbed.errors import ConfigError
from testbed.model.congestion import cc_problem
from testbed.model.document import Document, closest, workload_instead
from testbed.model.impairment import IMPAIRMENT_KEYS, Impairment, parse_impairment, round_trip
from testbed.model.limits import kernel_limit_problems
from testbed.model.schedule import ScheduleEntry, parse_schedule

NODE_KINDS = ("host", "router")
# names are checked with fullmatch: '$' would also match before a trailing newline
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
MAX_NAME = 24          # keeps tb-<instance>-<node> and the ownership tag short
IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
IFNAMSIZ = 15          # usable bytes of a Linux interface name
ROUTING_SCOPES = ("hosts", "all")
IPv4Iface = ipaddress.IPv4Interface
IPv6Iface = ipaddress.IPv6Interface


@dataclass(frozen=True)
class Route:
    to: ipaddress.IPv4Network | ipaddress.IPv6Network
    via: str                     # a neighbour's node name or an IP address
    path: str                    # YAML path, for later error messages


@dataclass(frozen=True)
class Node:
    name: str
    kind: str                    # "host" or "router"
    cc: str | None = None        # default TCP congestion control of the node
    sysctls: tuple[tuple[str, str], ...] = ()
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    node: str
    ifname: str | None = None
    ipv4: IPv4Iface | None = None
    ipv6: IPv6Iface | None = None


@dataclass(frozen=True)
class Link:
    index: int
    a: Endpoint
    b: Endpoint
    mtu: int = 1500
    forward: Impairment = field(default_factory=Impairment)   # a -> b
    reverse: Impairment = field(default_factory=Impairment)   # b -> a

    @property
    def name(self) -> str:
        """The user-facing link name, ``a-b``."""
        return f"{self.a.node}-{self.b.node}"

    @property
    def emulated(self) -> bool:
        return not (self.forward.is_empty and self.reverse.is_empty)


@dataclass(frozen=True)
class Addressing:
    ipv4: ipaddress.IPv4Network = ipaddress.IPv4Network("10.0.0.0/16")
    prefix: int = 30
    ipv6: ipaddress.IPv6Network | None = None
    routing: str = "hosts"


@dataclass(frozen=True)
class Topology:
    name: str
    nodes: dict[str, Node]
    links: tuple[Link, ...]
    addressing: Addressing
    file: str = "<memory>"
    description: str = ""
    source: str = ""             # the YAML after templating, for results
    variables: dict[str, Any] = field(default_factory=dict)
    schedule: tuple[ScheduleEntry, ...] = ()   # run-time link changes (model/schedule.py)

    @property
    def hosts(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.kind == "host"]


TOP_KEYS = {"name", "description", "addressing", "defaults", "nodes", "links", "schedule"}
NODE_KEYS = {"kind", "cc", "sysctls", "routes"}
LINK_KEYS = {"endpoints", "mtu", "forward", "reverse"} | set(IMPAIRMENT_KEYS)
ENDPOINT_KEYS = {"node", "ifname", "ipv4", "ipv6"}
ADDRESSING_KEYS = {"ipv4", "prefix", "ipv6", "routing"}
DEFAULTS_KEYS = {"cc", "sysctls"}
ROUTE_KEYS = {"to", "via"}
SYSCTL_RE = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+")


def _check_keys(doc: Document, data: Any, allowed: set[str], path: str, what: str) -> dict:
    if not isinstance(data, dict):
        raise doc.error(path, f"{what} must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            suggestion = _closest(str(key), allowed)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            raise doc.error(f"{path}.{key}" if path else str(key),
                            f"unknown key {key!r} in {what}{hint}; allowed: "
                            f"{', '.join(sorted(allowed))}")
    return data


SYNONYMS = {"latency": "delay", "bandwidth": "rate", "bw": "rate", "buffer": "queue",
            "limit": "queue", "drop": "loss", "type": "kind", "interfaces": "links",
            "hosts": "nodes", "routers": "nodes", "congestion_control": "cc"}


def _closest(word: str, options: set[str]) -> str | None:
    return closest(word, options, SYNONYMS)


def name_problem(name: Any, what: str) -> str | None:
    """Why ``name`` cannot name a node, a topology or an instance; None if it can."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        return (f"{what} {name!r} is not a safe name: use letters, digits, '-' and '_', "
                "starting with a letter")
    if len(name) > MAX_NAME:
        return f"{what} {name!r} is {len(name)} characters long; the limit is {MAX_NAME}"
    return None


def check_name(doc: Document, name: Any, path: str, what: str) -> str:
    problem = name_problem(name, what)
    if problem is not None:
        raise doc.error(path, problem)
    return name


def check_instance_name(name: Any, option: str = "--name") -> str:
    """``name`` if it is a safe testbed instance name (the rule of node names), else a
    ConfigError naming ``option``. Every way in that takes an instance name applies it
    before the name becomes a path (/run/testbed/<name>) or a namespace name."""
    problem = name_problem(name, "instance name")
    if problem is not None:
        raise ConfigError(problem, file=option or None)
    return name


def _parse_sysctls(doc: Document, data: Any, path: str) -> tuple[tuple[str, str], ...]:
    if data is None:
        return ()
    if not isinstance(data, dict):
        raise doc.error(path, "sysctls must be a mapping like {net.ipv4.tcp_ecn: 1}")
    out = []
    for key, value in data.items():
        if not isinstance(key, str) or not SYSCTL_RE.fullmatch(key):
            raise doc.error(f"{path}.{key}", f"{key!r} is not a sysctl name like net.ipv4.tcp_ecn")
        if not key.startswith("net."):
            raise doc.error(f"{path}.{key}", f"{key!r} is not per network namespace; "
                            "only net.* sysctls can be set on a node")
        if isinstance(value, (dict, list)) or value is None:
            raise doc.error(f"{path}.{key}", "a sysctl value must be a scalar")
        if isinstance(value, bool):
            value = int(value)
        out.append((key, str(value)))
    return tuple(out)


def _parse_cc(doc: Document, value: Any, path: str) -> str | None:
    if value is None:
        return None
    problem = cc_problem(value)
    if problem:
        raise doc.error(path, problem)
    return value


def _parse_nodes(doc: Document, data: Any, defaults: dict) -> dict[str, Node]:
    if not isinstance(data, dict) or not data:
        raise doc.error("nodes", "nodes must be a non-empty mapping of name: {kind: host|router}")
    nodes: dict[str, Node] = {}
    lowered: dict[str, str] = {}
    for name, spec in data.items():
        path = f"nodes.{name}"
        check_name(doc, name, path, "node name")
        if name.lower() in lowered:
            raise doc.error(path, f"node {name!r} differs from {lowered[name.lower()]!r} only "
                            "in case; names must differ in more than case")
        lowered[name.lower()] = name
        spec = {} if spec is None else spec
        _check_keys(doc, spec, NODE_KEYS, path, "a node")
        kind = spec.get("kind", "host")
        if kind not in NODE_KINDS:
            raise doc.error(f"{path}.kind", f"unknown node kind {kind!r}; use host or router")
        cc = _parse_cc(doc, spec.get("cc", defaults.get("cc")), f"{path}.cc")
        sysctls = dict(_parse_sysctls(doc, defaults.get("sysctls"), "defaults.sysctls"))
        sysctls.update(_parse_sysctls(doc, spec.get("sysctls"), f"{path}.sysctls"))
        routes = _parse_routes(doc, spec.get("routes"), f"{path}.routes")
        nodes[name] = Node(name=name, kind=kind, cc=cc, sysctls=tuple(sysctls.items()),
                           routes=routes)
    return nodes


def _parse_routes(doc: Document, data: Any, path: str) -> tuple[Route, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise doc.error(path, "routes must be a list of {to: PREFIX, via: NODE-or-ADDRESS}")
    routes = []
    for i, item in enumerate(data):
        rpath = f"{path}[{i}]"
        _check_keys(doc, item, ROUTE_KEYS, rpath, "a route")
        if "to" not in item or "via" not in item:
            raise doc.error(rpath, "a route needs both 'to' and 'via'")
        to = item["to"]
        try:
            net = ipaddress.ip_network("0.0.0.0/0" if to == "default" else str(to), strict=True)
        except ValueError as exc:
            raise doc.error(f"{rpath}.to", f"{to!r} is not a network prefix: {exc}") from None
        if not isinstance(item["via"], str):
            raise doc.error(f"{rpath}.via", f"'via' is a neighbour's name or an address, "
                            f"got {item['via']!r}")
        routes.append(Route(to=net, via=item["via"], path=rpath))
    return tuple(routes)


def _parse_endpoint(doc: Document, data: Any, path: str) -> Endpoint:
    if isinstance(data, str):
        return Endpoint(node=data)
    _check_keys(doc, data, ENDPOINT_KEYS, path, "a link endpoint")
    if "node" not in data:
        raise doc.error(path, "a link endpoint needs 'node'")
    if not isinstance(data["node"], str):
        raise doc.error(f"{path}.node", f"'node' names a node, got {data['node']!r}")
    ifname = data.get("ifname")
    if ifname is not None:
        if not isinstance(ifname, str) or not IFNAME_RE.fullmatch(ifname):
            raise doc.error(f"{path}.ifname", f"{ifname!r} is not a valid interface name")
        if len(ifname.encode()) > IFNAMSIZ:
            raise doc.error(f"{path}.ifname", f"interface name {ifname!r} is longer than "
                            f"{IFNAMSIZ} bytes (the kernel's IFNAMSIZ limit)")
        if ifname == "lo":
            raise doc.error(f"{path}.ifname", "'lo' is the loopback interface")
    ipv4 = ipv6 = None
    if data.get("ipv4") is not None:
        try:
            ipv4 = ipaddress.IPv4Interface(str(data["ipv4"]))
        except ValueError as exc:
            raise doc.error(f"{path}.ipv4", f"{data['ipv4']!r} is not an IPv4 address with "
                            f"prefix like 10.1.0.1/30: {exc}") from None
        if "/" not in str(data["ipv4"]):
            raise doc.error(f"{path}.ipv4", f"give the prefix length too, e.g. {data['ipv4']}/30")
    if data.get("ipv6") is not None:
        try:
            ipv6 = ipaddress.IPv6Interface(str(data["ipv6"]))
        except ValueError as exc:
            raise doc.error(f"{path}.ipv6", f"{data['ipv6']!r} is not an IPv6 address with "
                            f"prefix: {exc}") from None
    for family, iface in (("ipv4", ipv4), ("ipv6", ipv6)):
        problem = None if iface is None else host_address_problem(iface)
        if problem is not None:
            raise doc.error(f"{path}.{family}", problem)
    return Endpoint(node=data["node"], ifname=ifname, ipv4=ipv4, ipv6=ipv6)


def host_address_problem(iface: IPv4Iface | IPv6Iface) -> str | None:
    """Why ``iface`` cannot be a host's address in its subnet; None if it can.

    An IPv4 subnet's first and last addresses are its network and broadcast
    addresses, except in a /31 or /32 (RFC 3021); an IPv6 subnet's first is the
    subnet-router anycast address (RFC 4291), except in a /127 or /128 (RFC 6164).
    """
    net, ip = iface.network, iface.ip
    if net.num_addresses <= 2:
        return None
    if ip == net.network_address:
        what = "network address" if net.version == 4 else "subnet-router anycast address"
        return f"{iface} is the {what} of {net}, not a host address"
    if net.version == 4 and ip == net.broadcast_address:
        return f"{iface} is the broadcast address of {net}, not a host address"
    return None


def _parse_links(doc: Document, data: Any, nodes: dict[str, Node]) -> tuple[Link, ...]:
    if data is None:
        data = []
    if not isinstance(data, list):
        raise doc.error("links", "links must be a list of {endpoints: [A, B], ...}")
    links = []
    for i, item in enumerate(data):
        path = f"links[{i}]"
        _check_keys(doc, item, LINK_KEYS, path, "a link")
        ends = item.get("endpoints")
        if not isinstance(ends, list) or len(ends) != 2:
            raise doc.error(f"{path}.endpoints", "a link needs exactly two endpoints: [A, B]")
        a = _parse_endpoint(doc, ends[0], f"{path}.endpoints[0]")
        b = _parse_endpoint(doc, ends[1], f"{path}.endpoints[1]")
        for j, end in enumerate((a, b)):
            if end.node not in nodes:
                known = ", ".join(sorted(nodes))
                raise doc.error(f"{path}.endpoints[{j}]", f"unknown node {end.node!r} "
                                f"(nodes are: {known})")
        if a.node == b.node:
            raise doc.error(f"{path}.endpoints", f"a link cannot join {a.node!r} to itself")
        mtu = item.get("mtu", 1500)
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
            raise doc.error(f"{path}.mtu", f"mtu must be an integer from 68 to 65535, got {mtu!r}")
        both = {k: v for k, v in item.items() if k in IMPAIRMENT_KEYS}
        directional = {}
        for direction in ("forward", "reverse"):
            spec = item.get(direction)
            if spec is None:
                directional[direction] = {}
                continue
            _check_keys(doc, spec, set(IMPAIRMENT_KEYS), f"{path}.{direction}",
                        f"the {direction} direction of a link")
            directional[direction] = spec
        # validate the shared part once so its errors carry its own path
        try:
            parse_impairment(both, file=doc.file, path=path, partial=True)
        except ConfigError as exc:
            raise doc.error(exc.path or path, exc.message) from None
        imps = {}
        for direction, spec in directional.items():
            merged = dict(both)
            merged.update(spec)
            where = f"{path}.{direction}" if spec else path
            try:
                imps[direction] = parse_impairment(merged, file=doc.file, path=where)
            except ConfigError as exc:
                raise doc.error(exc.path or where, exc.message) from None
        link = Link(index=i, a=a, b=b, mtu=mtu, forward=imps["forward"], reverse=imps["reverse"])
        _check_kernel_limits(doc, link, path, both, directional)
        links.append(link)
    return tuple(links)


def _check_kernel_limits(doc: Document, link: Link, path: str, both: dict[str, Any],
                         directional: dict[str, dict[str, Any]]) -> None:
    """Each direction's rate and queue must fit what the kernel is sent (model/limits.py);
    the error names where the offending key is written."""
    rtt = round_trip(link.forward, link.reverse)
    for direction, other in (("forward", "reverse"), ("reverse", "forward")):
        for key, problem in kernel_limit_problems(getattr(link, direction), rtt, link.mtu):
            where = (f"{path}.{direction}.{key}" if key in directional[direction] else
                     f"{path}.{key}" if key in both else
                     f"{path}.{other}.{key}" if key in directional[other] else path)
            sender, receiver = (link.a, link.b) if direction == "forward" else (link.b, link.a)
            raise doc.error(where, f"{sender.node}->{receiver.node}: {problem}")


def _parse_addressing(doc: Document, data: Any) -> Addressing:
    if data is None:
        return Addressing()
    _check_keys(doc, data, ADDRESSING_KEYS, "addressing", "addressing")
    values: dict[str, Any] = {}
    if "ipv4" in data:
        try:
            values["ipv4"] = ipaddress.IPv4Network(str(data["ipv4"]))
        except ValueError as exc:
            raise doc.error("addressing.ipv4", f"not an IPv4 prefix: {exc}") from None
    if "prefix" in data:
        if data["prefix"] not in (30, 31):
            raise doc.error("addressing.prefix", "prefix must be 30 or 31 (one small subnet per link)")
        values["prefix"] = data["prefix"]
    if data.get("ipv6") is not None:
        try:
            net6 = ipaddress.IPv6Network(str(data["ipv6"]))
        except ValueError as exc:
            raise doc.error("addressing.ipv6", f"not an IPv6 prefix: {exc}") from None
        if net6.prefixlen > 64:
            raise doc.error("addressing.ipv6", "the IPv6 pool must be /64 or larger "
                            "(one /64 per link)")
        values["ipv6"] = net6
    if "routing" in data:
        if data["routing"] not in ROUTING_SCOPES:
            raise doc.error("addressing.routing", "routing must be 'hosts' (routes to every "
                            "host subnet) or 'all' (routes to every link subnet)")
        values["routing"] = data["routing"]
    return Addressing(**values)


def parse_topology(doc: Document, *, require_name: bool = True) -> Topology:
    """Validate a loaded document as a topology."""
    data = doc.data
    if data is None:
        raise doc.error("", "the file is empty; a topology needs 'nodes' and 'links'")
    wrong = workload_instead(data, doc.file)
    if wrong is not None:
        raise wrong
    _check_keys(doc, data, TOP_KEYS, "", "a topology")
    name = data.get("name")
    if name is None and require_name:
        raise doc.error("name", "a topology needs a 'name' (the default instance name)")
    if name is not None:
        check_name(doc, name, "name", "topology name")
    defaults = _check_keys(doc, data.get("defaults") or {}, DEFAULTS_KEYS, "defaults", "defaults")
    if "cc" in defaults:
        _parse_cc(doc, defaults["cc"], "defaults.cc")
    nodes = _parse_nodes(doc, data.get("nodes"), defaults)
    links = _parse_links(doc, data.get("links"), nodes)
    addressing = _parse_addressing(doc, data.get("addressing"))
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise doc.error("description", "description must be text")
    topo = Topology(name=name or "testbed", nodes=nodes, links=links, addressing=addressing,
                    file=doc.file, description=description, source=doc.text,
                    variables=dict(doc.variables),
                    schedule=parse_schedule(doc, data.get("schedule"), links))
    _check_interfaces(doc, topo)
    return topo


def _check_interfaces(doc: Document, topo: Topology) -> None:
    """Explicit interface names unique per node; explicit addresses unique overall."""
    seen_if: dict[tuple[str, str], str] = {}
    seen_addr: dict[Any, str] = {}
    for link in topo.links:
        for j, end in enumerate((link.a, link.b)):
            path = f"links[{link.index}].endpoints[{j}]"
            if end.ifname:
                key = (end.node, end.ifname)
                if key in seen_if:
                    raise doc.error(f"{path}.ifname", f"interface {end.ifname!r} of node "
                                    f"{end.node!r} is already used at {seen_if[key]}")
                seen_if[key] = path
            for family in ("ipv4", "ipv6"):
                addr = getattr(end, family)
                if addr is None:
                    continue
                if addr.ip in seen_addr:
                    raise doc.error(f"{path}.{family}", f"address {addr.ip} is already used "
                                    f"at {seen_addr[addr.ip]}")
                seen_addr[addr.ip] = f"{path}.{family}"
        for family in ("ipv4", "ipv6"):
            ea, eb = getattr(link.a, family), getattr(link.b, family)
            if (ea is None) != (eb is None):
                raise doc.error(f"links[{link.index}].endpoints",
                                f"give an explicit {family} address to both ends of a link, or to neither")
            if ea is not None and ea.network != eb.network:
                raise doc.error(f"links[{link.index}].endpoints[1].{family}",
                                f"{eb} is not in the same subnet as {ea}")
            if ea is not None and ea.network.num_addresses < 2:
                raise doc.error(f"links[{link.index}].endpoints[0].{family}",
                                f"{ea.network} has no room for two ends")
