"""Rate limiting and the bottleneck buffer with tbf, over netlink (pyroute2).

tc accounts whole Ethernet frames (14-byte header included), so TCP goodput
through a tbf is 1448/1514 = 95.6 % of its rate at MTU 1500; that is the
configured link rate measured at frame level, as with netem. The buffer is
tbf's ``limit``; ``burst`` only needs to cover one frame (two, for slack)
or ~1 ms of tokens at high rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from testbed.realize.netns import enter
from testbed.errors import RealizeError

ETH_HEADER = 14
# the handle marks the root qdisc as ours ("tb" in ASCII)
HANDLE_MAJOR = 0x7462
HANDLE = HANDLE_MAJOR << 16
MAX_RATE_BYTES = 2**32 - 1  # pyroute2's tbf sends no TCA_TBF_RATE64


@dataclass(frozen=True)
class TbfParams:
    """Resolved tbf parameters, in bytes per second and bytes."""

    rate_bytes: int
    burst: int
    limit: int

    def describe(self) -> str:
        return (f"tbf handle {HANDLE_MAJOR:x}: root rate {self.rate_bytes * 8}bit "
                f"burst {self.burst}b limit {self.limit}b")


def tbf_params(rate_bps: float, buffer_bytes: int, mtu: int) -> TbfParams:
    """tbf parameters for a rate and a buffer (pure)."""
    rate_bytes = int(round(rate_bps / 8.0))
    frame = mtu + ETH_HEADER
    burst = max(2 * frame, int(rate_bytes * 0.001))
    return TbfParams(rate_bytes=rate_bytes, burst=burst, limit=max(buffer_bytes, frame))


def _ifindex(ipr: IPRoute, netns: str, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise RealizeError(f"interface {ifname!r} not found in namespace {netns!r}")
    return found[0]


def _root_tbf(ipr: IPRoute, index: int):
    for msg in ipr.get_qdiscs(index=index):
        if msg["parent"] == 0xFFFFFFFF and msg.get_attr("TCA_KIND") == "tbf" \
                and msg["handle"] == HANDLE:
            return msg
    return None


def read(netns: str, ifname: str) -> TbfParams | None:
    """Our tbf on the interface as the kernel reports it, or None."""
    with enter(netns), IPRoute() as ipr:
        msg = _root_tbf(ipr, _ifindex(ipr, netns, ifname))
    if msg is None:
        return None
    parms = msg.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
    return TbfParams(rate_bytes=parms["rate"], burst=-1, limit=parms["limit"])


def apply(netns: str, ifname: str, params: TbfParams) -> None:
    """Create or replace our root tbf, then read it back."""
    try:
        with enter(netns), IPRoute() as ipr:
            index = _ifindex(ipr, netns, ifname)
            ipr.tc("replace", "tbf", index, HANDLE, rate=params.rate_bytes,
                   burst=params.burst, limit=params.limit)
    except NetlinkError as exc:
        raise RealizeError(f"tbf on {netns}/{ifname} failed: {exc}; does the kernel "
                           "have sch_tbf?") from None
    got = read(netns, ifname)
    if got is None or got.rate_bytes != params.rate_bytes or got.limit != params.limit:
        raise RealizeError(f"tbf on {netns}/{ifname} reads back as {got}, planned "
                           f"{params}; another tool may be changing this qdisc")


def remove(netns: str, ifname: str) -> None:
    """Delete our root tbf if it is there (only ours, recognised by its handle)."""
    with enter(netns), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found or _root_tbf(ipr, found[0]) is None:
            return
        try:
            ipr.tc("del", index=found[0], handle=HANDLE, root=True)
        except NetlinkError as exc:
            if exc.code != 2:  # ENOENT: already gone
                raise RealizeError(f"removing tbf on {netns}/{ifname} failed: {exc}") from None
