"""What the kernel can be told about a link direction, as testbed encodes it (pure).

Checked when a topology, its schedule or a live change is validated, so
that a value the encoding cannot carry is an error naming the YAML path,
not a traceback half-way through ``up``.

The bottleneck is a tbf (both link backends, ``emulation/tbf.py``).
pyroute2 sends its ``struct tc_tbf_qopt`` and rate table with 32-bit
fields and no ``TCA_TBF_RATE64``:

- the rate in bytes/s: 1 to 2^32-1 (34.36 Gbit/s);
- the burst, and each entry of the rate table (frames up to
  ``RATE_TABLE_BYTES``), as the time to send it at the rate, in 64 ns
  psched ticks: at most 2^32-1 ticks (275 s). This sets the lowest rate:
  96 bit/s at MTU 1500, more with jumbo frames;
- the limit (the queue) in bytes: at most 2^32-1 (4 GiB).

netem's own numbers cannot overflow: delay and jitter go as 64-bit
nanoseconds (a duration is at most a year, ``testbed.units``) and its
packet limit is capped at 2^31-1 (``emulation/netem.py``).
"""

from __future__ import annotations

import math

from testbed.model.impairment import ETH_HEADER, Impairment, rtt_or_default
from testbed.units import Duration, Rate

U32_MAX = 2**32 - 1
PSCHED_TICKS_PER_US = 1000 / 64          # the kernel's psched tick is 64 ns
RATE_TABLE_BYTES = 2048                  # pyroute2's rate table: 256 cells of 8 bytes


def tbf_burst(rate_bytes: int, mtu: int) -> int:
    """The tbf burst: two frames, or ~1 ms of tokens at high rates."""
    return max(2 * (mtu + ETH_HEADER), int(rate_bytes * 0.001))


def send_ticks(size: int, rate_bytes: int) -> int:
    """psched ticks to send ``size`` bytes at ``rate_bytes``/s, as pyroute2 computes them."""
    return int(1e6 * size / rate_bytes * PSCHED_TICKS_PER_US)


def _rate_fits(rate_bytes: int, mtu: int) -> bool:
    longest = max(tbf_burst(rate_bytes, mtu), RATE_TABLE_BYTES)
    return 0 < rate_bytes <= U32_MAX and send_ticks(longest, rate_bytes) <= U32_MAX


def lowest_tbf_rate(mtu: int) -> int:
    """The lowest rate (bytes/s) whose burst and rate table fit in 32-bit ticks."""
    longest = max(2 * (mtu + ETH_HEADER), RATE_TABLE_BYTES)
    rate = math.ceil(1e6 * longest * PSCHED_TICKS_PER_US / U32_MAX)
    while rate > 1 and _rate_fits(rate - 1, mtu):
        rate -= 1
    while not _rate_fits(rate, mtu):
        rate += 1
    return rate


def kernel_limit_problems(imp: Impairment, rtt_hint: Duration | None,
                          mtu: int) -> list[tuple[str, str]]:
    """(impairment key, why) for each value of ``imp`` the tbf cannot be given, on a
    link of ``mtu`` whose round trip is ``rtt_hint``. Empty: everything fits."""
    if imp.rate is None:
        return []
    problems = []
    rate_bytes = int(round(imp.rate.bps / 8.0))
    if rate_bytes > U32_MAX:
        problems.append(("rate", f"rate {imp.rate} is above {Rate(U32_MAX * 8.0)}, the most "
                         "tbf takes as a 32-bit rate in bytes/s"))
    elif not _rate_fits(rate_bytes, mtu):
        lowest = Rate(lowest_tbf_rate(mtu) * 8.0)
        problems.append(("rate", f"rate {imp.rate} is below {lowest}, the least tbf takes "
                         f"at mtu {mtu} (it gets the time to send a burst as 32-bit 64 ns "
                         "ticks)"))
    queue = imp.bottleneck_bytes(rtt_hint, mtu)
    if queue is not None and queue > U32_MAX:
        key = "queue" if imp.queue is not None else "delay"
        what = f"queue {imp.queue}" if imp.queue is not None else "the default queue (1bdp)"
        problems.append((key, f"{what} is {queue / 2**30:,.1f} GiB at rate {imp.rate} over "
                         f"a {rtt_or_default(rtt_hint)} round trip; tbf's limit is 32 bits: "
                         f"at most {U32_MAX} bytes (4 GiB)"))
    return problems
