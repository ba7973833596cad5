"""What a run ran on, for manifest.json: the command, kernel, host and tool
versions, the workload point, the topology as rendered and each link direction
in force, and each node's sysctls, qdiscs, offloads and addresses (before and
after the run). Reads only; changes nothing."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyroute2

from testbed.collect import qdisc
from testbed.output import say
from testbed.results import SCHEMA_VERSION
from testbed.kernel.sysctl import available_ccs
from testbed.run import conditions
from testbed.version import __version__
from testbed.workload import RunPoint, Workload
from testbed.workload.matrix import Matrix
from testbed.workload.sharding import run_record

SYSCTLS = ("net/ipv4/tcp_congestion_control", "net/ipv4/tcp_allowed_congestion_control",
           "net/ipv4/tcp_ecn", "net/ipv4/tcp_sack", "net/ipv4/tcp_timestamps",
           "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/tcp_no_metrics_save",
           "net/ipv4/tcp_slow_start_after_idle", "net/ipv4/ip_forward", "net/core/default_qdisc")
OFFLOADS = ("tcp-segmentation-offload", "generic-segmentation-offload",
            "generic-receive-offload", "large-receive-offload")


def tool_version(argv: list[str]) -> str | None:
    """The first line a tool prints for its version, or None if it cannot say."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip()
    return text.splitlines()[0] if text else None


def static_manifest(wl: Workload, point: RunPoint, command: list[str],
                    matrix: Matrix) -> dict[str, Any]:
    """What is known before the testbed is touched, with which run of which matrix this
    is and which engine's job ran it (``matrix``, ``engine``: what ``merge`` reads)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command, "cwd": os.getcwd(),
        "kernel": {"release": platform.release(), "version": platform.version(),
                   "machine": platform.machine(), "available_cc": available_ccs()},
        "host": {"hostname": socket.gethostname(), "cpus": os.cpu_count()},
        "tools": {"testbed": __version__, "python": platform.python_version(),
                  "pyroute2": getattr(pyroute2, "__version__", None),
                  "iperf3": tool_version(["iperf3", "--version"]),
                  "tcpdump": tool_version(["tcpdump", "--version"])},
        "workload": {"name": wl.name, "file": str(wl.file), "rendered": "workload.yaml",
                     "variables": wl.variables, "point": point.point,
                     "repetition": point.repetition, "seed": point.seed},
        "topology": {"file": str(wl.topology_path) if wl.topology_path else None,
                     "inline": wl.topology_inline},
        **run_record(matrix, point, os.environ),
    }


def record_conditions(manifest: dict[str, Any], run_dir: Path, net: Any,
                      variables: dict[str, Any], expected: Any | None, wl: Workload) -> None:
    """The topology as rendered and each link direction as in force, before the run.
    ``expected``: attaching with variables, the topology the workload asks for; where
    the testbed differs, the mismatches are recorded and warned about, loudly."""
    rendered = net.deployed.source
    if rendered:
        (run_dir / "topology.yaml").write_text(rendered)
    manifest["topology"].update({
        "name": net.deployed.topology, "built_from": net.deployed.file,
        "rendered": "topology.yaml" if rendered else None, "variables": variables,
        "links": [{"name": l.name, "forward": l.forward.describe(),
                   "reverse": l.reverse.describe()} for l in net.links]})
    manifest["links_before"] = conditions.link_directions(net.deployed, net.state_dir)
    if expected is not None:
        found = conditions.mismatches(wl, expected, net.deployed, manifest["links_before"])
        manifest["testbed"]["mismatches"] = found
        for message in conditions.messages(found):
            say(sys.stderr, f"testbed: WARNING: {message}: this run is recorded with the "
                "testbed's links as they are and marked suspect")


def _sysctls(node: Any) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    with node.enter():
        for key in SYSCTLS:
            try:
                out[key.replace("/", ".")] = Path("/proc/sys", key).read_text().strip()
            except OSError:
                out[key.replace("/", ".")] = None
    return out


def _offloads(node: Any) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for iface in node.interfaces:
        text = node.run(["ethtool", "-k", iface.ifname], check=False).stdout
        out[iface.ifname] = {k: v for k, v in re.findall(r"^([\w-]+): (\w+)", text, re.M)
                             if k in OFFLOADS}
    return out


def node_state(net: Any) -> dict[str, Any]:
    """Per node: its sysctls, qdisc tree, offloads and addresses as they are now."""
    return {node.name: {"netns": node.netns, "kind": node.kind, "sysctls": _sysctls(node),
                        "qdiscs": qdisc.qdisc_tree(lambda argv, n=node: n.run(argv, check=False).stdout),
                        "offloads": _offloads(node),
                        "addresses": [str(a) for i in node.interfaces for a in i.addresses]}
            for node in net.nodes.values()}
