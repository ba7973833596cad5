"""The link engine's timing: release compensation (a delay is the link's whole latency)."""

from __future__ import annotations

import random
import statistics

import pytest

from testbed.emulation import engine
from testbed.emulation.delayline import DelayConfig, DelayLine


def test_the_compensation_shortens_a_delay_but_never_below_the_arrival():
    line = DelayLine(DelayConfig(delay_us=1000), random.Random(1))
    line.arrive(1, 5_000_000, early_ns=30_000)
    assert line.next_due() == 5_970_000
    short = DelayLine(DelayConfig(delay_us=10), random.Random(1))
    short.arrive(1, 5_000_000, early_ns=30_000)
    assert short.next_due() == 5_000_000     # due at its arrival, not 20 us before it


def test_the_compensation_follows_the_mean_release_lateness():
    rng = random.Random(7)
    comp = 0
    seen = []
    for _ in range(5000):
        late = int(rng.gauss(25_000, 10_000))
        comp = engine.next_compensation(comp, late)
        seen.append(comp)
    assert statistics.mean(seen[-2000:]) == pytest.approx(25_000, abs=2_000)
    # a stall counts as at most the cap, and the result stays within 0 and the cap
    assert engine.next_compensation(0, 10**9) == engine._COMP_MAX_NS >> engine._COMP_SHIFT
    assert engine.next_compensation(0, -10**9) == 0
    assert engine.next_compensation(engine._COMP_MAX_NS, 10**9) == engine._COMP_MAX_NS


def test_a_release_is_recorded_as_its_error_against_the_configured_delay(tmp_path):
    eng = engine.Engine(str(tmp_path / "c.json"), str(tmp_path / "s.json"), 1, False)
    eng.compensation = 20_000
    eng._note_release(26_000)    # 26 us after the compensated due: 6 us late
    assert eng.late == [6_000]
    assert eng.compensation == 20_000 + (6_000 >> engine._COMP_SHIFT)
