"""PIE (RFC 8033, the kernel's sch_pie.c / pie.h) for the link engine's FIFO bottleneck. Pure.

PIE decides at enqueue: a packet is dropped (or, with ECN on an ECN-capable
packet while the probability is at most 10 %, marked CE) with probability
``prob``. Every ``tupdate`` the probability follows the queue delay:
``prob += alpha * (qdelay - target) + beta * (qdelay - qdelay_old)`` with
alpha = 0.125 and beta = 1.25 per second, both scaled down while ``prob`` is
small (/2 under 10 %, then /4 per decade down to 1e-6), increases capped at
2 % per update above 10 %, 2 % more when the delay exceeds 250 ms, a decay
of 1/64 while the delay stays zero, and the measurement cycle restarted
(burst allowance 150 ms again) once delay and ``prob`` have been low.
The drop itself is derandomised as the kernel does (``accu_prob``).

The kernel's timer runs the update every ``tupdate``. Here the queue is a
FIFO served at a known rate, so the queue delay at any instant is known (the
wait of a packet arriving then: the time until the link is free), and the
updates due since the last packet are caught up lazily at each arrival,
each with the queue delay as of its own boundary (``catch_up``). Times are
integer nanoseconds.
"""

from __future__ import annotations

import random

ALPHA = 0.125           # per second (tc pie's alpha 2, in sixteenths)
BETA = 1.25             # per second (beta 20)
MAX_BURST_NS = 150_000_000
MARK_ECN_TH = 0.1       # above this probability ECN-capable packets are dropped too
DELAY_HIGH_NS = 250_000_000


def scaled_gains(prob: float) -> tuple[float, float]:
    """alpha and beta for the current probability (RFC 8033 5.2, pie.h)."""
    alpha, beta = ALPHA, BETA
    if prob < 0.1:
        alpha, beta = alpha / 2, beta / 2
        power = 100
        while prob < 1 / power and power <= 1_000_000:
            alpha, beta = alpha / 4, beta / 4
            power *= 10
    return alpha, beta


class Pie:
    """The drop probability and its update; ``drop_early`` is the enqueue decision."""

    def __init__(self, target_ns: int, tupdate_ns: int, rng: random.Random,
                 mtu: int = 1514) -> None:
        self.target, self.tupdate, self.mtu = target_ns, tupdate_ns, mtu
        self.rng = rng
        self.prob = 0.0
        self.qdelay = 0
        self.qdelay_old = 0
        self.burst_ns = MAX_BURST_NS
        self.accu_prob = 0.0
        self.next_update: int | None = None

    def catch_up(self, now: int, link_free: int) -> None:
        """Run every update due by ``now``; the queue is unchanged since the last packet,
        so its delay at a boundary ``t`` is ``link_free - t`` (0 once the link is idle)."""
        if self.next_update is None:
            self.next_update = now + self.tupdate
        while self.next_update <= now:
            t = self.next_update
            if link_free <= t and self.prob == 0 and self.qdelay_old == 0:
                # idle and nothing left to decay: the remaining updates change nothing
                # but the burst allowance, which the first of them has restored already
                self.update(0)
                self.next_update = t + ((now - t) // self.tupdate + 1) * self.tupdate
                return
            self.update(max(0, link_free - t))
            self.next_update = t + self.tupdate

    def update(self, qdelay: int) -> None:
        """One ``tupdate``: the probability from ``qdelay`` (ns) and the previous one."""
        alpha, beta = scaled_gains(self.prob)
        delta = (alpha * (qdelay - self.target) + beta * (qdelay - self.qdelay_old)) / 1e9
        if delta > 0.02 and self.prob >= 0.1:
            delta = 0.02              # at most 2 % up per update
        if qdelay > DELAY_HIGH_NS:
            delta += 0.02
        prob = self.prob + delta
        saturated = prob >= 1.0
        prob = min(1.0, max(0.0, prob))
        if qdelay == 0 and self.qdelay_old == 0 and not saturated:
            prob -= prob / 64         # no queue for two updates: decay
        self.prob = prob
        self.burst_ns = max(0, self.burst_ns - self.tupdate)
        if qdelay < self.target // 2 and self.qdelay_old < self.target // 2 and prob == 0:
            self.burst_ns = MAX_BURST_NS   # restart the measurement cycle
            self.accu_prob = 0.0
        self.qdelay = self.qdelay_old = qdelay

    def drop_early(self, qdelay: int, backlog: int) -> bool:
        """The enqueue decision (pie_drop_early): whether this packet gets the signal."""
        if self.burst_ns > 0:
            return False
        if qdelay < self.target // 2 and self.prob < 0.2:
            return False
        if backlog < 2 * self.mtu:
            return False
        if self.prob == 0:
            self.accu_prob = 0.0
            return False
        self.accu_prob += self.prob
        if self.accu_prob < 0.85:
            return False
        if self.accu_prob >= 8.5:
            return True
        if self.rng.random() < self.prob:
            self.accu_prob = 0.0
            return True
        return False

    def may_mark(self) -> bool:
        """Whether a signal may be a CE mark (mark_ecnth: prob at most 10 %)."""
        return self.prob <= MARK_ECN_TH

    def dropped(self) -> None:
        """A packet was dropped at enqueue (any reason): the derandomisation restarts."""
        self.accu_prob = 0.0
