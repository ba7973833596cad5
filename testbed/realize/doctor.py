"""``testbed doctor``: what this host offers and lacks, and what to do about each.

Kernel features are probed for real in a scratch namespace of our own
(tagged like any other, so ``clean`` finds it after a crash); nothing
outside it is changed, except that the kernel may autoload a qdisc module.
"""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

from testbed.plan.types import netns_name, owner_tag
from testbed.kernel import netns, red, sysctl, tracefs
from testbed.kernel.tc import CREATE_OR_REPLACE, qdisc_message, send
from testbed.errors import RealizeError

QDISC_KINDS = ("netem", "tbf", "htb", "ingress", "fq", "fq_codel", "codel", "pie", "red", "cake",
               "sfq")
AQM_QDISCS = ("codel", "fq_codel", "pie", "red")   # what a link's aqm: needs with the netem backend
BINARIES = (
    # binary, apt package, why
    ("iperf3", "iperf3", "bulk TCP/UDP workloads"),
    ("tcpdump", "tcpdump", "packet captures"),
    ("ping", "iputils-ping", "reachability checks and `testbed validate`"),
    ("ethtool", "ethtool", "turning offloads off on emulated links"),
    ("iptables", "iptables", "the NFQUEUE delay line of the userspace link backend"),
)
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21
# a sysctl every IPv4 kernel has; container runtimes mount /proc/sys read-only unless privileged
SYSCTL_PROBE = sysctl.PROC_SYS / "net" / "ipv4" / "ip_forward"


@dataclass
class Finding:
    name: str
    status: str          # "ok", "warn" (works, with less), "fail" (cannot work)
    detail: str
    fix: str = ""


def _capabilities() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def probe_qdiscs() -> dict[str, bool]:
    """Which qdisc kinds the kernel accepts, tried on a dummy device in a scratch namespace."""
    probe = f"doctor{os.getpid()}"
    name = netns_name(probe, "probe")
    result: dict[str, bool] = {}
    with netns.Namespaces() as spaces:
        try:
            with spaces.create(name), IPRoute() as ipr:
                ipr.link("property_add", index=1, altname=owner_tag(probe, "probe"))
                ipr.link("add", ifname="probe0", kind="veth", peer={"ifname": "probe1"})
                index = ipr.link_lookup(ifname="probe0")[0]
                ipr.link("set", index=index, state="up")
                for kind in QDISC_KINDS:
                    result[kind] = _try_red(ipr, name, index) if kind == "red" \
                        else _try_qdisc(ipr, index, kind)
        finally:
            spaces.remove(name)
    return result


def _try_qdisc(ipr: IPRoute, index: int, kind: str) -> bool:
    args: dict = {}
    if kind == "tbf":
        args = {"rate": "10mbit", "burst": 15000, "latency": "50ms"}
    elif kind == "htb":
        args = {"default": 1}
    try:
        if kind == "ingress":
            ipr.tc("add", "ingress", index, "ffff:")
            ipr.tc("del", "ingress", index, "ffff:")
        else:
            ipr.tc("add", kind, index, "1:", **args)
            ipr.tc("del", kind, index, "1:", **args)
    except NetlinkError:
        return False
    return True


def _try_red(ipr: IPRoute, netns_name: str, index: int) -> bool:
    """red has no defaults to start from (and pyroute2 no red plugin): send tc's options."""
    options = red.options(red.red_params(100 * 1514, 1_250_000, 1514, ecn=False), tick_in_usec)
    try:
        send(netns_name, qdisc_message(index, "red", 1 << 16, 0xFFFFFFFF, options,
                                       CREATE_OR_REPLACE), "red qdisc")
        ipr.tc("del", index=index, handle=1 << 16, root=True)
    except (RealizeError, NetlinkError):
        return False
    return True


def aqm_check(kinds: dict[str, bool]) -> Finding:
    """Which bottleneck disciplines (a link's ``aqm:``) run where on this kernel."""
    have = [k for k in AQM_QDISCS if kinds.get(k)]
    engine = ("the userspace backend's link engine is itself the bottleneck for every aqm "
              "(codel, fq_codel, red, pie; ECN marks with ecn)")
    if kinds.get("netem") and have:
        return Finding("aqm", "ok", f"kernel qdiscs {', '.join(have)}: with the netem backend a "
                     f"link's aqm runs there; {engine}")
    # every aqm runs either way: not a warning (a new user took one for "second class")
    if have:
        return Finding("aqm", "ok", f"{engine}; kernel qdiscs {', '.join(have)} exist but no "
                     "sch_netem, so links use the userspace backend")
    return Finding("aqm", "ok", f"{engine}; this kernel has no AQM qdisc "
                 f"({', '.join(AQM_QDISCS)}): to compare with the kernel's, run on one that has them and sch_netem "
                 "(testbed run --kernel, vagrant/guest)")


def sysctl_check(probe: Path = SYSCTL_PROBE) -> Finding:
    """Whether net.* sysctls can be written: testbed sets them in each namespace it makes
    (forwarding, IPv6 DAD, congestion control). The capabilities alone are not enough."""
    if os.access(probe, os.W_OK):
        return Finding("sysctls", "ok", "/proc/sys is writable")
    return Finding("sysctls", "fail", f"cannot write {probe}: /proc/sys is read-only here (a "
                 "container that is not privileged?); every testbed would fail to come up",
                 "run the container privileged (podman/docker run --privileged; Kubernetes "
                 "securityContext.privileged: true)")


def tcp_events_check(found: tracefs.Probe) -> Finding:
    """Whether runs can record kernel TCP events (tcp_events.csv), and what is missing."""
    if found.root is None and found.fix == tracefs.MOUNT_FIX:
        # a run mounts it (recorded as a host change; the last down unmounts it)
        return Finding("tcp events", "ok", "tracefs is not mounted: each run mounts it for "
                     "its tcp events, and the last 'down' unmounts it again")
    if not found.usable:
        return Finding("tcp events", "warn", "runs record no tcp_events.csv: "
                     + "; ".join(found.problems), found.fix)
    missing = found.missing()
    if missing:
        return Finding("tcp events", "warn", f"tracefs at {found.root}; this kernel lacks "
                     f"{', '.join(missing)}: those columns stay empty")
    return Finding("tcp events", "ok", f"tracefs at {found.root}, all {len(found.events)} tcp "
                 "tracepoints")


def run_checks() -> list[Finding]:
    checks: list[Finding] = [Finding("kernel", "ok", f"Linux {platform.release()}")]
    caps = _capabilities()
    privileged = bool(caps & (1 << CAP_NET_ADMIN)) and bool(caps & (1 << CAP_SYS_ADMIN))
    if privileged:
        checks.append(Finding("privileges", "ok", "CAP_NET_ADMIN and CAP_SYS_ADMIN"))
    else:
        checks.append(Finding("privileges", "fail", "not root (CAP_NET_ADMIN and CAP_SYS_ADMIN "
                            "needed to build namespaces)", "run testbed as root (in a root shell, or with sudo)"))
    if privileged:
        checks.append(sysctl_check(SYSCTL_PROBE))
        try:
            kinds = probe_qdiscs()
        except (OSError, NetlinkError) as exc:
            checks.append(Finding("qdiscs", "fail", f"could not probe: {exc}"))
            kinds = {}
        if kinds:
            have = [k for k, ok in kinds.items() if ok]
            lack = [k for k, ok in kinds.items() if not ok]
            checks.append(Finding("qdiscs", "ok" if kinds.get("tbf") else "fail",
                                f"available: {', '.join(have) or 'none'}; "
                                f"missing: {', '.join(lack) or 'none'}",
                                "" if kinds.get("tbf") else "the kernel needs sch_tbf"))
            if kinds.get("netem"):
                checks.append(Finding("link emulation", "ok", "sch_netem present: links use the "
                                    "netem backend"))
            else:
                checks.append(Finding("link emulation", "warn", "no sch_netem: emulated links use "
                                    "the userspace backend (tbf for rate, the NFQUEUE link engine for "
                                    "delay, jitter and loss)",
                                    "for netem: apt-get install linux-modules-extra-$(uname -r) "
                                    "(Ubuntu) or kernel-modules-extra (Fedora), then modprobe "
                                    "sch_netem; or use vagrant/guest"))
            checks.append(aqm_check(kinds))
    available = sysctl.available_ccs()
    allowed = sysctl.read_sysctl("net.ipv4.tcp_allowed_congestion_control").split()
    checks.append(Finding("congestion control", "ok" if {"cubic", "bbr"} <= set(available) else "warn",
                        f"available: {' '.join(available)}; allowed in namespaces without a host "
                        f"change: {' '.join(allowed)}",
                        "" if "bbr" in available else "modprobe tcp_bbr"))
    not_allowed = [cc for cc in available if cc not in allowed]
    if not_allowed:
        checks.append(Finding("cc allowed list", "ok", f"{' '.join(not_allowed)} not in "
                            "tcp_allowed_congestion_control: testbed adds them while a testbed "
                            "uses them, records it, and restores the list on down"))
    checks.append(tcp_events_check(tracefs.probe(tracefs.TCP_EVENTS)))
    for binary, package, why in BINARIES:
        path = shutil.which(binary)
        checks.append(Finding(binary, "ok" if path else "warn", path or f"missing ({why})",
                            "" if path else f"apt-get install {package}"))
    return checks


def render(checks: list[Finding]) -> str:
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for check in checks:
        lines.append(f"[{marks[check.status]}] {check.name:<20} {check.detail}")
        if check.fix:
            lines.append(f"       {'':<20} fix: {check.fix}")
    failed = sum(c.status == "fail" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    lines.append(f"{failed} problem(s), {warned} warning(s)")
    return "\n".join(lines)
