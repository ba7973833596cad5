"""Pure parts of testbed.instance.validate: intervals, windows, judgements."""

from testbed.model.impairment import parse_impairment
from testbed.instance.validate import loss_check, rtt_check, steady_rate, wilson


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


def test_rtt_check_reports_the_error_per_delayed_pass():
    check = rtt_check([20.4] * 98 + [21.0, 30.0], 100, 20.0, 0.0, passes=2)
    per_pass = check.detail["error_per_pass_ms"]
    assert abs(per_pass["p50"] - 0.2) < 1e-9 and abs(per_pass["p99"] - 0.5) < 1e-9
    assert "error_per_pass_ms" not in rtt_check([20.0] * 10, 10, 20.0, 0.0).detail
