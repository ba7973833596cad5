"""The scheduling logic of one link engine lane, pure and clock-free.

A ``DelayLine`` decides, for each packet id the kernel hands over, whether
to drop it (random or Gilbert-Elliott loss), accept it at once (netem-style reorder:
the packet skips the delay line) or hold it until a due time. Held packets
are released in the order they came (arrival order; on an FQ-CoDel lane the
scheduler's dequeue order, released with per-packet verdicts) because a batch
verdict accepts every id up to N: a jittered due time earlier than its
predecessor's is clamped up to it (as netem does when a rate is set). Only the reorder probability makes
packets overtake each other.

Time is passed in as integer nanoseconds so tests can drive it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, fields

from testbed.emulation.bottleneck import BottleneckConfig
from testbed.emulation.distributions import offsets_table

HOLD = 0
ACCEPT_NOW = 1
DROP = 2


@dataclass(frozen=True)
class DelayConfig:
    """What one lane of the link engine does. Times in microseconds, probabilities as fractions."""

    delay_us: float = 0.0
    jitter_us: float = 0.0
    distribution: str | None = None  # None/"uniform", "normal", "pareto", "paretonormal"
    reorder: float = 0.0
    loss: float = 0.0  # independent random loss
    ge_p: float | None = None  # Gilbert-Elliott: good->bad
    ge_r: float | None = None  # bad->good
    ge_h: float = 0.0  # delivery probability in the bad state
    ge_k: float = 1.0  # delivery probability in the good state
    # with an aqm the engine is the direction's bottleneck (bottleneck.py), before the delay
    aqm: str | None = None
    rate_bps: float = 0.0
    limit_bytes: int = 0
    target_us: float = 5000.0
    interval_us: float = 100000.0
    ecn: bool = False
    limit_packets: int = 0      # the aqm's limit when one was given (0: the bytes only)

    def bottleneck(self) -> BottleneckConfig | None:
        if self.aqm is None:
            return None
        return BottleneckConfig(self.rate_bps, self.limit_bytes, self.aqm,
                                int(self.target_us * 1000), int(self.interval_us * 1000),
                                self.ecn, self.limit_packets)

    def to_dict(self) -> dict:
        # not dataclasses.asdict: it deep-copies, and up writes this for every lane 3 times
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "DelayConfig":
        return cls(**data)


class DelaySampler:
    """Draws per-packet delays in ns with netem's distribution semantics."""

    def __init__(self, config: DelayConfig, rng: random.Random) -> None:
        self._rng = rng
        self._mu = config.delay_us * 1000.0
        self._sigma = config.jitter_us * 1000.0
        self._table = offsets_table(config.distribution) if self._sigma > 0 else None

    def sample_ns(self) -> int:
        if self._sigma <= 0:
            return int(self._mu)
        if self._table is None:
            value = self._mu - self._sigma + 2.0 * self._sigma * self._rng.random()
        else:
            value = self._mu + self._sigma * self._table[self._rng.getrandbits(12)]
        return int(value) if value > 0 else 0


class GilbertElliott:
    """Two-state loss chain; ``lost()`` advances it by one packet."""

    def __init__(self, p: float, r: float, h: float, k: float, rng: random.Random) -> None:
        self._p, self._r, self._h, self._k = p, r, h, k
        self._rng = rng
        self.bad = False

    def lost(self) -> bool:
        rnd = self._rng.random
        if self.bad:
            if rnd() < self._r:
                self.bad = False
            return rnd() >= self._h
        if rnd() < self._p:
            self.bad = True
        return rnd() >= self._k


class DelayLine:
    """Held packet ids with their due times, released in arrival order."""

    def __init__(self, config: DelayConfig, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._held: deque[tuple[int, int]] = deque()
        self._last_due = 0
        self.configure(config)

    def configure(self, config: DelayConfig) -> None:
        """Switch to a new configuration; already held packets keep their due times."""
        self.config = config
        self._sampler = DelaySampler(config, self._rng)
        self._loss = (GilbertElliott(config.ge_p, config.ge_r or 0.0, config.ge_h,
                                     config.ge_k, self._rng)
                      if config.ge_p is not None else None)
        self._reorder = config.reorder
        self._random_loss = config.loss
        # a fixed delay and nothing random: packets that came together share a due time
        self._fixed_ns = (int(config.delay_us * 1000) if config.jitter_us <= 0
                          and self._loss is None and not config.loss and not config.reorder
                          else None)

    def __len__(self) -> int:
        return len(self._held)

    def arrive(self, packet_id: int, now_ns: int, early_ns: int = 0) -> int:
        """Decide about a new packet: HOLD (queued here), ACCEPT_NOW or DROP.

        ``early_ns`` is taken off the packet's delay (never below zero): the engine's
        measured release lateness, so that on average a packet leaves on time."""
        if self._loss is not None and self._loss.lost():
            return DROP
        if self._random_loss and self._rng.random() < self._random_loss:
            return DROP
        if self._reorder and self._rng.random() < self._reorder:
            return ACCEPT_NOW
        delay = self._sampler.sample_ns() - early_ns
        due = now_ns + delay if delay > 0 else now_ns
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._held.append((due, packet_id))
        return HOLD

    def arrive_all(self, ids: list[int], now_ns: int, early_ns: int = 0) -> list[tuple[int, int]]:
        """``arrive`` for packets that came together, in order: the (id, action) of those
        not held (dropped or reordered)."""
        fixed = self._fixed_ns
        if not ids:
            return []
        if fixed is None:
            decided = [(pid, self.arrive(pid, now_ns, early_ns)) for pid in ids]
            return [(pid, action) for pid, action in decided if action != HOLD]
        delay = fixed - early_ns
        due = now_ns + delay if delay > 0 else now_ns
        if due < self._last_due:
            due = self._last_due
        self._last_due = due
        self._held.extend([(due, pid) for pid in ids])
        return []

    def next_due(self) -> int | None:
        return self._held[0][0] if self._held else None

    def release(self, now_ns: int) -> int | None:
        """Pop every packet due by ``now_ns``; the highest id to batch-accept, or None."""
        held = self._held
        last = None
        while held and held[0][0] <= now_ns:
            last = held.popleft()[1]
        return last

    def release_ids(self, now_ns: int) -> list[int]:
        """Pop every packet due by ``now_ns``: their ids in order (when some need their own
        verdict, e.g. a CE-marked payload)."""
        held = self._held
        out = []
        while held and held[0][0] <= now_ns:
            out.append(held.popleft()[1])
        return out

    def release_all(self) -> int | None:
        """Pop everything (shutdown): the highest held id, or None."""
        last = self._held[-1][1] if self._held else None
        self._held.clear()
        return last
