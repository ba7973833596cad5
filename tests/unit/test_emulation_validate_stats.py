"""validate's pure judgements (testbed.instance.checks): intervals, windows, judgements."""

from testbed.model.impairment import parse_impairment
from testbed.instance.checks import (loss_check, mean_rate, per_pass_check, rtt_check,
                                       standing_queue_check, steady_rate, wilson)
from testbed.model.impairment import Aqm


def test_wilson_contains_truth_and_narrows():
    lo, hi = wilson(20, 2000)
    assert lo < 0.01 < hi
    lo2, hi2 = wilson(1000, 100_000)
    assert lo2 < 0.01 < hi2 and hi2 - lo2 < hi - lo
    assert wilson(0, 2000)[0] == 0.0


def test_loss_check_flags_a_wrong_rate():
    imp = parse_impairment({"loss": "1%"}, file=None, path="t")
    assert loss_check(1000, 100_000, imp).ok
    assert not loss_check(5000, 100_000, imp).ok
    assert not loss_check(30, 2000, parse_impairment({}, file=None, path="t")).ok


def test_rtt_check_uses_median_and_a_loose_mean():
    assert rtt_check([20.2] * 99 + [60.0], 100, 20.0, 0.0).ok
    assert not rtt_check([25.0] * 100, 100, 20.0, 0.0).ok
    assert not rtt_check([], 100, 20.0, 0.0).ok


def test_steady_rate_takes_the_best_window():
    # 1 MB/s with a stall in the middle
    samples = [(t / 10, int(t / 10 * 1e6)) for t in range(10)]
    samples += [(1.0 + t / 10, int(1e6)) for t in range(1, 5)]
    samples += [(1.4 + t / 10, int(1e6 + t / 10 * 1e6)) for t in range(1, 10)]
    assert abs(steady_rate(samples) - 8e6) < 1e3
    assert steady_rate(samples[:3]) is None


def test_per_pass_error_is_what_each_delayed_direction_adds_beyond_delay_and_base():
    rtts = [20.5] * 98 + [21.1, 30.0]
    check = per_pass_check(rtts, 20.0, 2, 0.1, "h1-r1 (not emulated)")
    err = check.detail["error_ms"]
    assert abs(err["p50"] - 0.2) < 1e-9 and abs(err["p99"] - 0.5) < 1e-9, err
    assert check.ok is None and "base 0.100 ms from h1-r1" in check.detail["note"]
    raw = per_pass_check(rtts, 20.0, 2, None, "every link of the testbed is emulated")
    assert abs(raw.detail["error_ms"]["p50"] - 0.25) < 1e-9    # veth and stack included
    assert "no base subtracted" in raw.detail["note"]


CODEL = Aqm("codel")
RATE, BUFFER = 20e6, 200_000        # the buffer drains in 80 ms


def test_codel_standing_queue_is_judged_against_its_target():
    quiet = [20.0] * 40
    near = standing_queue_check(quiet, [26.0] * 50 + [40.0] * 10, CODEL, RATE, BUFFER, 19e6)
    assert near.ok is True and near.detail["standing_ms"]["p50"] == 6.0, near
    assert near.detail["high_ms"] == 15.0
    bloated = standing_queue_check(quiet, [95.0] * 60, CODEL, RATE, BUFFER, 19e6)
    assert bloated.ok is False, bloated
    idle = standing_queue_check(quiet, [95.0] * 60, CODEL, RATE, BUFFER, 2e6)
    assert idle.ok is None and "not saturated" in idle.detail["note"]
    assert standing_queue_check(quiet, [], CODEL, RATE, BUFFER, 19e6).ok is False


def test_a_fifo_must_fill_its_buffer_and_red_is_reported():
    quiet = [20.0] * 40
    fifo = Aqm("fifo")
    assert standing_queue_check(quiet, [90.0] * 60, fifo, RATE, BUFFER, 19e6).ok is True
    assert standing_queue_check(quiet, [25.0] * 60, fifo, RATE, BUFFER, 19e6).ok is False
    assert standing_queue_check(quiet, [30.0] * 60, Aqm("red"), RATE, BUFFER, 19e6).ok is None


def test_mean_rate_skips_the_filling_and_is_not_fooled_by_a_catch_up_burst():
    # 1 MB/s with a stall at 2 s caught up at 2.2 s: the best window would say more
    samples = [(t / 10, int(t / 10 * 1e6)) for t in range(20)]
    samples += [(2.1, int(1.9e6)), (2.2, int(2.2e6))]
    samples += [(2.2 + t / 10, int(2.2e6 + t / 10 * 1e6)) for t in range(1, 20)]
    assert abs(mean_rate(samples) - 8e6) < 1e3
    assert steady_rate(samples) > 8.5e6
    assert mean_rate(samples[:3]) is None
