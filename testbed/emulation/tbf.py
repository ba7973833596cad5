"""Rate limiting and the bottleneck buffer with tbf, over netlink (pyroute2).

tc accounts whole Ethernet frames (14-byte header included), so TCP goodput
through a tbf is 1448/1514 = 95.6 % of its rate at MTU 1500; that is the
configured link rate measured at frame level, as with netem. The buffer is
tbf's ``limit``; ``burst`` only needs to cover one frame (two, for slack)
or ~1 ms of tokens at high rates.

A tbf splits a GSO packet larger than its burst when it *enqueues* it.
A packet queued under a larger burst that exceeds a new, smaller one can
never collect enough tokens: changing the tbf in place (``tc qdisc change``,
which keeps the queue) then stalls it for good, and everything queued
behind that packet with it (a rate lowered 100 -> 10 Mbit/s mid-flow:
100 % loss). So when the burst shrinks, ``apply`` also grafts a fresh byte
FIFO under the tbf, which drops what the old queue held, and says how much
(``Flushed``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from testbed.kernel import tc as rtnl
from testbed.kernel.netns import enter
from testbed.errors import RealizeError
from testbed.model.limits import ETH_HEADER, U32_MAX, tbf_burst

if TYPE_CHECKING:
    from pyroute2 import IPRoute

# pyroute2 is imported where it is used: importing it costs 0.15-0.35 s, and this
# module is imported on every `testbed up` (testbed.emulation.links -> testbed.emulation)

# the handle marks the root qdisc as ours ("tb" in ASCII)
HANDLE_MAJOR = 0x7462
HANDLE = HANDLE_MAJOR << 16
TC_H_ROOT = 0xFFFFFFFF
# the byte FIFO grafted under a tbf to drop its queue: alternating handles,
# since a replace with the child's own handle only changes its limit
FIFO_HANDLES = (0x7464 << 16, 0x7465 << 16)
MAX_RATE_BYTES = U32_MAX  # pyroute2's tbf sends no TCA_TBF_RATE64 (model/limits.py)


@dataclass(frozen=True)
class TbfParams:
    """Resolved tbf parameters, in bytes per second and bytes."""

    rate_bytes: int
    burst: int
    limit: int

    def describe(self) -> str:
        return (f"tbf handle {HANDLE_MAJOR:x}: root rate {self.rate_bytes * 8}bit "
                f"burst {self.burst}b limit {self.limit}b")


@dataclass(frozen=True)
class Flushed:
    """What a tbf's queue held when it was replaced (read just before: approximate)."""

    old_burst: int
    new_burst: int
    packets: int
    bytes: int

    def describe(self) -> str:
        return (f"burst shrank {self.old_burst}b -> {self.new_burst}b: dropped the "
                f"{self.packets} packets ({self.bytes} bytes) queued under the old burst, "
                "which the tbf could never have sent")


def queue_must_go(old: TbfParams | None, new: TbfParams) -> bool:
    """Pure: whether a tbf changed from ``old`` to ``new`` may hold packets it can never send.

    A queued packet is at most ``old.burst`` bytes (bigger GSO packets were
    split on enqueue); one bigger than ``new.burst`` would wait forever.
    """
    return old is not None and new.burst < old.burst


def tbf_params(rate_bps: float, buffer_bytes: int, mtu: int) -> TbfParams:
    """tbf parameters for a rate and a buffer (pure)."""
    rate_bytes = int(round(rate_bps / 8.0))
    return TbfParams(rate_bytes=rate_bytes, burst=tbf_burst(rate_bytes, mtu),
                     limit=max(buffer_bytes, mtu + ETH_HEADER))


def _ifindex(ipr: IPRoute, netns: str, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise RealizeError(f"interface {ifname!r} not found in namespace {netns!r}")
    return found[0]


def _our_tbf(ipr: IPRoute, index: int, handle: int = HANDLE, parent: int = TC_H_ROOT):
    for msg in ipr.get_qdiscs(index=index):
        if msg["parent"] == parent and msg.get_attr("TCA_KIND") == "tbf" \
                and msg["handle"] == handle:
            return msg
    return None


def read(netns: str, ifname: str, handle: int = HANDLE,
         parent: int = TC_H_ROOT) -> TbfParams | None:
    """Our tbf on the interface as the kernel reports it, or None."""
    from pyroute2 import IPRoute
    with enter(netns), IPRoute() as ipr:
        msg = _our_tbf(ipr, _ifindex(ipr, netns, ifname), handle, parent)
    if msg is None:
        return None
    parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
    return TbfParams(rate_bytes=parms["rate"], burst=-1, limit=parms["limit"])


def apply(netns: str, ifname: str, params: TbfParams, *, previous: TbfParams | None = None,
          handle: int = HANDLE, parent: int = TC_H_ROOT) -> Flushed | None:
    """Create or replace our tbf (root, or ``parent``'s child), then read it back.

    ``previous``: the parameters in force (None: none, or unknown). If the
    burst shrinks, the queue is replaced too (module docstring); returns what
    it held then if that was anything, else None.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    try:
        with enter(netns), IPRoute() as ipr:
            index = _ifindex(ipr, netns, ifname)
            ipr.tc("replace", "tbf", index, handle, parent=parent, rate=params.rate_bytes,
                   burst=params.burst, limit=params.limit)
    except NetlinkError as exc:
        raise RealizeError(f"tbf on {netns}/{ifname} failed: {exc}; does the kernel "
                           "have sch_tbf?") from None
    flushed = None
    if previous is not None and queue_must_go(previous, params):
        packets, size = fresh_queue(netns, ifname, index, handle, parent, params.limit)
        if packets:
            flushed = Flushed(previous.burst, params.burst, packets, size)
    got = read(netns, ifname, handle, parent)
    if got is None or got.rate_bytes != params.rate_bytes or got.limit != params.limit:
        raise RealizeError(f"tbf on {netns}/{ifname} reads back as {got}, planned "
                           f"{params}; another tool may be changing this qdisc")
    return flushed


def fresh_queue(netns: str, ifname: str, index: int, handle: int, parent: int,
                 limit: int) -> tuple[int, int]:
    """Graft a new bfifo under our tbf (the old queue is dropped): (packets, bytes) it held."""
    from pyroute2 import IPRoute
    with enter(netns), IPRoute() as ipr:
        tbf_msg = _our_tbf(ipr, index, handle, parent)
        if tbf_msg is None:
            raise RealizeError(f"tbf on {netns}/{ifname} vanished while it was changed")
        stats = tbf_msg.get_attr("TCA_STATS2")
        queue = None if stats is None else stats.get_attr("TCA_STATS_QUEUE")
        held = (0, 0) if queue is None else (queue["qlen"], queue["backlog"])
        children = [q["handle"] for q in ipr.get_qdiscs(index=index)
                    if q["parent"] == handle | 1]
    fifo = FIFO_HANDLES[1] if FIFO_HANDLES[0] in children else FIFO_HANDLES[0]
    rtnl.send(netns, rtnl.qdisc_message(index, "bfifo", fifo, handle | 1,
                                        struct.pack("=I", limit), rtnl.CREATE_OR_REPLACE),
              f"a fresh queue under the tbf of {ifname}")
    with enter(netns), IPRoute() as ipr:
        if not any(q["handle"] == fifo and q["parent"] == handle | 1
                   for q in ipr.get_qdiscs(index=index)):
            raise RealizeError(f"the fresh queue under the tbf of {netns}/{ifname} "
                               "does not read back")
    return held


def remove(netns: str, ifname: str, handle: int = HANDLE, parent: int = TC_H_ROOT) -> None:
    """Delete our tbf (and its queue) if it is there (only ours, recognised by its handle)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    with enter(netns), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found or _our_tbf(ipr, found[0], handle, parent) is None:
            return
        where = {"root": True} if parent == TC_H_ROOT else {"parent": parent}
        try:
            ipr.tc("del", index=found[0], handle=handle, **where)
        except NetlinkError as exc:
            if exc.code != 2:  # ENOENT: already gone
                raise RealizeError(f"removing tbf on {netns}/{ifname} failed: {exc}") from None
