"""The bottleneck queue's discipline as a kernel qdisc (netem backend): codel, fq_codel, pie.

With a rate, the bottleneck is tbf (``tbf.py``); an AQM takes the place of
tbf's inner queue, grafted as its child::

    tbf  handle 7463:  ...  rate + burst
      codel | fq_codel | pie  handle 7466: parent 7463:1   limit, target, interval, ecn

so the AQM judges the sojourn time of packets waiting for tbf's tokens, as it
would on a real bottleneck. Its ``limit`` (packets) is then the buffer, not
tbf's. The options are built byte for byte here (``options``: pure, unit-tested
against the kernel's uapi attribute numbers) and sent with ``kernel.tc``.
Parameters not given take the kernel's defaults (``Aqm.resolved``). RED
needs a rate-derived table (``tc red``'s stab) and is not built here yet:
``unsupported`` says so. Our CI kernels have none of these qdiscs; the QEMU
guest has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.kernel import nlmsg
from testbed.kernel.tc import CREATE_OR_REPLACE, qdisc_message, send
from testbed.model.impairment import Aqm

AQM_HANDLE = 0x7466 << 16   # not 0x7464/0x7465: tbf grafts its fresh FIFOs there (tbf.py)
KERNEL_KINDS = ("codel", "fq_codel", "pie")

# include/uapi/linux/pkt_sched.h: TCA_CODEL_*, TCA_FQ_CODEL_*, TCA_PIE_* (times in us)
ATTRS = {
    "codel": {"target": 1, "limit": 2, "interval": 3, "ecn": 4},
    "fq_codel": {"target": 1, "limit": 2, "interval": 3, "ecn": 4},
    "pie": {"target": 1, "limit": 2, "interval": 3, "ecn": 6},   # interval: TCA_PIE_TUPDATE
}


@dataclass(frozen=True)
class AqmParams:
    """What goes to the kernel: every parameter resolved."""

    kind: str
    target_us: int
    interval_us: int
    limit: int
    ecn: bool

    def describe(self, parent: int) -> str:
        return (f"{self.kind} handle {AQM_HANDLE >> 16:x}: parent {parent >> 16:x}:{parent & 0xFFFF:x} "
                f"limit {self.limit}p target {self.target_us}us interval {self.interval_us}us"
                f"{' ecn' if self.ecn else ''}")


def resolve(aqm: Aqm, ecn: bool | None) -> AqmParams:
    """Pure: the kernel's defaults filled in (``aqm.kind`` in ``KERNEL_KINDS``)."""
    r = aqm.resolved()
    assert r.target is not None and r.interval is not None and r.limit is not None
    return AqmParams(r.kind, round(r.target.seconds * 1e6), round(r.interval.seconds * 1e6),
                     r.limit, bool(ecn))


def options(p: AqmParams) -> bytes:
    """TCA_OPTIONS of the qdisc: u32 attributes (pure)."""
    ids = ATTRS[p.kind]
    return (nlmsg.u32(ids["target"], p.target_us) + nlmsg.u32(ids["limit"], p.limit)
            + nlmsg.u32(ids["interval"], p.interval_us) + nlmsg.u32(ids["ecn"], int(p.ecn)))


def install(netns: str, ifindex: int, p: AqmParams, parent: int) -> None:
    """Graft (or change in place) the AQM under tbf ``parent``."""
    send(netns, qdisc_message(ifindex, p.kind, AQM_HANDLE, parent | 1, options(p),
                              CREATE_OR_REPLACE),
         f"{p.kind} qdisc", hint=f"; does the kernel have sch_{p.kind}? (modprobe sch_{p.kind})")


def unsupported(aqm: Aqm | None) -> list[str]:
    """What the kernel path cannot do (pure)."""
    if aqm is not None and aqm.kind == "red":
        return ["aqm red: not built for the netem backend yet (needs tc red's rate table); "
                "use codel, fq_codel or pie"]
    return []
