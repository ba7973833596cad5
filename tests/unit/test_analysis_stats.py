"""Statistics over repetitions: t quantiles, CIs, Mann-Whitney U (values checked against scipy)."""

from __future__ import annotations

import math

import pytest

from testbed.analysis import stats


@pytest.mark.parametrize("df, expected", [(1, 12.706204736174694), (4, 2.7764451051977934),
                                          (10, 2.228138851986274), (100, 1.9839715184496334)])
def test_t_quantile_matches_tables(df, expected):
    assert stats.t_ppf(0.975, df) == pytest.approx(expected, rel=1e-9)
    assert stats.t_ppf(0.025, df) == pytest.approx(-expected, rel=1e-9)


def test_mean_ci_known_answer():
    est = stats.mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451051977934 * math.sqrt(2.5 / 5)
    assert est.mean == 3.0
    assert est.ci_low == pytest.approx(3 - half)
    assert est.ci_high == pytest.approx(3 + half)
    assert est.n == 5


def test_mean_ci_of_identical_values_is_a_point():
    est = stats.mean_ci([7.0, 7.0, 7.0])
    assert (est.mean, est.ci_low, est.ci_high) == (7.0, 7.0, 7.0)


def test_one_value_has_no_interval_and_nones_are_ignored():
    est = stats.mean_ci([None, 4.0])
    assert est.mean == 4.0 and est.ci_low is None and est.ci_high is None and est.n == 1
    assert stats.mean_ci([]).mean is None


def test_mann_whitney_exact_separated_samples():
    r = stats.mann_whitney_u([1, 2, 3, 4], [5, 6, 7, 8])
    assert r.u == 0 and r.method == "exact"
    assert r.p_value == pytest.approx(2 / 70)
    assert r.significant()


def test_mann_whitney_three_vs_three_cannot_reach_005():
    r = stats.mann_whitney_u([10, 11, 12], [1, 2, 3])
    assert r.u == 9
    assert r.p_value == pytest.approx(0.1)
    assert r.min_p == pytest.approx(0.1)
    assert not r.significant()


def test_mann_whitney_exact_overlapping():
    r = stats.mann_whitney_u([1.5, 9, 3, 4, 10], [5, 6, 7, 8, 2])
    assert r.u == 12 and r.p_value == pytest.approx(1.0)


def test_mann_whitney_ties_use_normal_approximation():
    r = stats.mann_whitney_u([1, 2, 2, 3, 7], [2, 3, 4, 5, 6, 8])
    assert r.method == "normal"
    assert r.u == 7.5
    assert r.p_value == pytest.approx(0.1960821150251133, rel=1e-9)


def test_mann_whitney_needs_data():
    with pytest.raises(ValueError):
        stats.mann_whitney_u([], [1.0])
