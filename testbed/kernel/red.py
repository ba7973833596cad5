"""The kernel's RED qdisc options, computed as iproute2's ``tc`` computes them. Pure.

``tc qdisc add ... red limit L min M max X avpkt A burst B probability P
bandwidth R [ecn]`` does not send its arguments as given: it turns them into
the kernel's fixed-point form (iproute2 tc/q_red.c, tc/tc_red.c)::

    TCA_RED_PARMS  struct tc_red_qopt {limit, qth_min, qth_max (bytes),
                                       Wlog, Plog, Scell_log, flags (u8)}
    TCA_RED_STAB   256 bytes: the idle-damping table, from the rate
    TCA_RED_MAX_P  u32: the probability at max, times 2^32
    TCA_RED_FLAGS  nla_bitfield32 {value, selector}: ECN here, not in qopt.flags

``Wlog`` comes from burst, avpkt and min (``eval_ewma``), ``Plog`` from the
probability over max - min (``eval_p``), ``Scell_log`` and the table from
the time one avpkt takes at the rate in psched ticks (``eval_idle_damping``).
Each function follows its tc counterpart line for line, with C's doubles,
so ``options`` is tc's TCA_OPTIONS byte for byte (tests/unit/test_red.py
holds bytes captured from tc 6.1.0; tests/integration/test_red_matches_tc.py
captures them again from the ``tc`` installed). tc 6.1 (Debian bookworm's,
the guest's and this VM's) truncates the transmit time to whole microseconds
and then to whole ticks (``xmit_ticks``); later versions (commits d947f365,
13b999aa) keep the fraction and round up, which moves table entries.

testbed's RED is the link engine's (emulation/bottleneck.py): for a byte limit L,
min L/12, max L/4, probability 2 % at max, w = 1/512 (``Wlog`` 9). tc takes
no ``w``, so ``red_params`` picks the smallest burst that tc turns into
Wlog 9 (``burst_for_wlog``): ``describe`` is then a tc command line that
builds the same qdisc.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from testbed.errors import RealizeError
from testbed.kernel import nlmsg

# include/uapi/linux/pkt_sched.h
TCA_RED_PARMS = 1
TCA_RED_STAB = 2
TCA_RED_MAX_P = 3
TCA_RED_FLAGS = 4
TC_RED_ECN = 1
RED_SUPPORTED_FLAGS = 0xF      # TC_RED_HISTORIC_FLAGS | TC_RED_NODROP: the selector tc sends
TIME_UNITS_PER_SEC = 1_000_000

WLOG = 9                       # w = 1/512, the link engine's RED
PROBABILITY = 0.02             # at max, the link engine's RED


def eval_ewma(qmin: int, burst: int, avpkt: int) -> int | None:
    """tc_red_eval_ewma: the smallest Wlog with burst + 1 - qmin/avpkt <= (1-(1-W)^burst)/W."""
    a = float(burst) + 1 - float(qmin) / avpkt
    if a < 1.0:
        return None
    w = 0.5
    for wlog in range(1, 32):
        if a <= (1 - math.pow(1 - w, burst)) / w:
            return wlog
        w /= 2
    return None


def eval_p(qmin: int, qmax: int, probability: float) -> int | None:
    """tc_red_eval_P: the smallest Plog with probability / (qmax - qmin) * 2^Plog > 1."""
    span = qmax - qmin
    if span == 0:
        return 0
    if span < 0:
        return None
    prob = probability / span
    for plog in range(32):
        if prob > 1.0:
            return plog
        prob *= 2
    return None


def xmit_ticks(rate_bytes: int, size: int, tick_in_usec: float) -> int:
    """tc_calc_xmittime of tc 6.1: psched ticks to send ``size`` bytes.

    tc 6.1 passes the time to tc_core_time2tick as an unsigned int, so it is
    truncated to whole microseconds before it becomes ticks (truncated again).
    """
    usec = int(TIME_UNITS_PER_SEC * (float(size) / float(rate_bytes))) & 0xFFFFFFFF
    return int(usec * tick_in_usec) & 0xFFFFFFFF


def _c_int(value: int) -> int:
    """A C int's value after ``value`` was stored in it (gcc wraps, two's complement)."""
    return (value + 2**31) % 2**32 - 2**31


def _c_u8(value: float) -> int:
    """A double stored in a __u8 as gcc on x86-64 does it: to a 32-bit int (cvttsd2si,
    INT_MIN when out of range), then its low byte."""
    whole = int(value) if -2**31 <= value < 2**31 else -2**31
    return whole & 0xFF


def eval_idle_damping(wlog: int, avpkt: int, rate_bytes: int,
                      tick_in_usec: float) -> tuple[int, bytes] | None:
    """tc_red_eval_idle_damping: (Scell_log, the 256-byte table) or None.

    Below ~700 kbit/s (Scell_log >= 24) tc's ``i << clog`` overflows its int
    and the entry comes out of the wrap; it is reproduced, not corrected.
    """
    lw = -math.log(1.0 - 1.0 / (1 << wlog)) / xmit_ticks(rate_bytes, avpkt, tick_in_usec)
    maxtime = 31 / lw
    for clog in range(32):
        if maxtime / (1 << clog) < 512:
            break
    else:
        return None
    entries = (_c_u8(_c_int(i << clog) * lw) for i in range(1, 255))
    return clog, bytes([0, *(min(e, 31) for e in entries), 31])


def burst_for_wlog(qmin: int, avpkt: int, wlog: int) -> int:
    """The smallest burst (packets) that ``eval_ewma`` turns into ``wlog`` (a bisection:
    Wlog grows with the burst, and is past ``wlog`` at qmin/avpkt + 2^wlog + 1).

    None exists when min is not above one avpkt (burst + 1 - min/avpkt must stay
    below (1-(1-W)^burst)/W < burst).
    """
    low, high = 1, qmin // avpkt + (1 << wlog) + 1
    while low < high:
        mid = (low + high) // 2
        if (eval_ewma(qmin, mid, avpkt) or 0) >= wlog:
            high = mid
        else:
            low = mid + 1
    if eval_ewma(qmin, low, avpkt) != wlog:
        raise RealizeError(f"aqm red: min {qmin} bytes (a twelfth of the buffer) is too "
                           f"close to one packet of {avpkt} bytes for w = 1/{1 << wlog}: "
                           "give the link a buffer of at least 13 packets")
    return low


@dataclass(frozen=True)
class RedParams:
    """tc red's arguments (bytes, packets, bytes per second): what ``options`` encodes."""

    limit: int
    qth_min: int
    qth_max: int
    avpkt: int
    burst: int
    rate_bytes: int
    ecn: bool
    probability: float = PROBABILITY
    kind: str = "red"

    def tc_args(self) -> list[str]:
        """``tc qdisc add ... <these>`` builds the same qdisc."""
        return ["red", "limit", str(self.limit), "min", str(self.qth_min), "max",
                str(self.qth_max), "avpkt", str(self.avpkt), "burst", str(self.burst),
                "probability", f"{self.probability:g}", "bandwidth",
                f"{self.rate_bytes * 8}bit", *(["ecn"] if self.ecn else [])]

    def describe(self, parent: int) -> str:
        return (f"red handle 7466: parent {parent >> 16:x}:{parent & 0xFFFF:x} "
                + " ".join(self.tc_args()[1:]))


def red_params(limit_bytes: int, rate_bytes: int, avpkt: int, ecn: bool) -> RedParams:
    """The link engine's RED for a byte limit, as tc arguments (pure).

    The kernel keeps the thresholds shifted left by Wlog in 32 bits, so max
    must stay below 2^(31 - Wlog) bytes (red_check_params): a buffer under
    16 MiB. And min must be above one avpkt (``burst_for_wlog``): over 12 packets.
    """
    qth_min, qth_max = limit_bytes // 12, limit_bytes // 4
    if qth_max.bit_length() + WLOG >= 32:
        raise RealizeError(f"aqm red: a buffer of {limit_bytes} bytes is more than the "
                           f"kernel's red takes with w = 1/{1 << WLOG} (max threshold "
                           f"{qth_max} bytes, not below 2^{31 - WLOG}); give the link at most "
                           f"{4 * (1 << (31 - WLOG)) - 1} bytes")
    return RedParams(limit=limit_bytes, qth_min=qth_min, qth_max=qth_max, avpkt=avpkt,
                     burst=burst_for_wlog(qth_min, avpkt, WLOG), rate_bytes=rate_bytes,
                     ecn=ecn)


def options(p: RedParams, tick_in_usec: float) -> bytes:
    """TCA_OPTIONS of the red qdisc, as tc builds it (pure)."""
    wlog = eval_ewma(p.qth_min, p.burst, p.avpkt)
    plog = eval_p(p.qth_min, p.qth_max, p.probability)
    damping = None if wlog is None else eval_idle_damping(wlog, p.avpkt, p.rate_bytes,
                                                           tick_in_usec)
    if wlog is None or plog is None or damping is None:
        raise RealizeError(f"red: tc's arithmetic fails for {p.describe(0)}")
    scell_log, table = damping
    qopt = struct.pack("=IIIBBBB", p.limit, p.qth_min, p.qth_max, wlog, plog, scell_log, 0)
    max_p = int(p.probability * 2.0**32)
    flags = struct.pack("=II", TC_RED_ECN if p.ecn else 0, RED_SUPPORTED_FLAGS)
    return (nlmsg.attr(TCA_RED_PARMS, qopt) + nlmsg.attr(TCA_RED_STAB, table)
            + nlmsg.attr(TCA_RED_MAX_P, struct.pack("=I", max_p))
            + nlmsg.attr(TCA_RED_FLAGS, flags))
