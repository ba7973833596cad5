"""The bottleneck queue's discipline as a kernel qdisc (netem backend): codel, fq_codel, pie, red.

With a rate, the bottleneck is tbf (``tbf.py``); an AQM takes the place of
tbf's inner queue, grafted as its child::

    tbf  handle 7463:  ...  rate + burst
      codel | fq_codel | pie  handle 7466: parent 7463:1   limit, target, interval, ecn
      red                     handle 7466: parent 7463:1   limit, min, max (bytes), ecn

so the AQM judges the sojourn time (RED: the average backlog) of packets
waiting for tbf's tokens, as it would on a real bottleneck. Its ``limit``
(packets; RED: bytes) is then the buffer, not tbf's. The options are built
byte for byte here (``options``: pure, unit-tested against the kernel's uapi
attribute numbers; RED's as tc computes them, ``kernel/red.py``) and sent with
``kernel.tc``. Parameters not given take the kernel's defaults
(``Aqm.resolved``); RED takes the link engine's (``red.red_params``) on the
link's buffer, or on ``limit`` packets when given. Our CI kernels have none
of these qdiscs; the QEMU guest has them.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.kernel import red
from testbed.kernel import nlmsg
from testbed.kernel.tc import CREATE_OR_REPLACE, qdisc_message, send
from testbed.model.impairment import Aqm, Impairment
from testbed.model.limits import ETH_HEADER
from testbed.units import Duration

AQM_HANDLE = 0x7466 << 16   # not 0x7464/0x7465: tbf grafts its fresh FIFOs there (tbf.py)
KERNEL_KINDS = ("codel", "fq_codel", "pie", "red")

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


def kernel_params(imp: Impairment, rtt_hint: Duration | None, mtu: int,
                  rate_bytes: int) -> AqmParams | red.RedParams | None:
    """Pure: the qdisc under tbf for ``imp`` (None: tbf's own fifo). ``rate_bytes``: tbf's."""
    if imp.aqm is None or imp.aqm.kind not in KERNEL_KINDS:
        return None
    if imp.aqm.kind != "red":
        return resolve(imp.aqm, imp.ecn)
    buffer = imp.aqm_buffer_bytes(rtt_hint, mtu)
    assert buffer is not None, "an AQM needs a rate (parse_impairment checks)"
    return red.red_params(buffer, rate_bytes, mtu + ETH_HEADER, bool(imp.ecn))


def options(p: AqmParams | red.RedParams, tick_in_usec: float) -> bytes:
    """TCA_OPTIONS of the qdisc (pure). ``tick_in_usec``: psched ticks per microsecond,
    which only RED's idle-damping table depends on."""
    if isinstance(p, red.RedParams):
        return red.options(p, tick_in_usec)
    ids = ATTRS[p.kind]
    return (nlmsg.u32(ids["target"], p.target_us) + nlmsg.u32(ids["limit"], p.limit)
            + nlmsg.u32(ids["interval"], p.interval_us) + nlmsg.u32(ids["ecn"], int(p.ecn)))


def needs_fresh_queue(before: str | None, after: str | None) -> bool:
    """Pure: whether tbf's inner queue must first be a fresh bfifo when its discipline goes
    from kind ``before`` to ``after`` (None: tbf's own fifo).

    The kernel changes a qdisc in place only into its own kind: another kind
    sent with the same handle is refused (EINVAL, "Invalid qdisc name"), so
    codel -> red replaces codel by a bfifo, then grafts red there. What the
    old discipline held is dropped, as with ``tc qdisc replace``.
    """
    return before is not None and before != after


def install(netns: str, ifindex: int, p: AqmParams | red.RedParams, parent: int) -> None:
    """Graft (or change in place) the AQM under tbf ``parent``."""
    # pyroute2 reads the kernel's tick from /proc/net/psched (netem.py imports it the same way)
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec
    send(netns, qdisc_message(ifindex, p.kind, AQM_HANDLE, parent | 1,
                              options(p, tick_in_usec), CREATE_OR_REPLACE),
         f"{p.kind} qdisc", hint=f"; does the kernel have sch_{p.kind}? (modprobe sch_{p.kind})")
