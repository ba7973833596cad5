"""Statistics over repetitions, with no dependency beyond the standard library.

- ``mean_ci``: the mean and a two-sided 95 % confidence interval from
  Student's t distribution (``mean +- t(0.975, n-1) * s / sqrt(n)``). With one
  repetition there is no interval (``None``), never a made-up one.
- ``mann_whitney_u``: the two-sided Mann-Whitney U test (Wilcoxon rank-sum),
  non-parametric, so "BBR beats CUBIC" needs no normality assumption. Exact
  p-value from the permutation distribution of U when there are no ties and
  both samples are small, else the normal approximation with tie and
  continuity corrections. Note: with 3 vs 3 repetitions the smallest possible
  two-sided p is 0.1, so significance at 0.05 needs at least 4 vs 4 (p >= 0.029).

The t quantile comes from the regularized incomplete beta function
(continued fraction, as in Numerical Recipes 6.4) inverted by bisection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

CONFIDENCE = 0.95
CI_METHOD = "Student t, 95 % two-sided, over repetitions"
TEST_METHOD = "Mann-Whitney U, two-sided (exact without ties for small samples, else normal approximation)"


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on ``t_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class Estimate:
    """A metric over repetitions: mean, 95 % CI (None with n < 2), the values."""

    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    values: tuple[float, ...]

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None or self.mean is None:
            return None
        return (self.ci_high - self.ci_low) / 2.0

    def as_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n,
                "values": list(self.values)}


def mean_ci(values: Sequence[float | None]) -> Estimate:
    """Mean and Student-t 95 % confidence interval of the non-None values."""
    vals = tuple(float(v) for v in values if v is not None and not math.isnan(v))
    n = len(vals)
    if n == 0:
        return Estimate(None, None, None, 0, ())
    mean = sum(vals) / n
    if n < 2:
        return Estimate(mean, None, None, n, vals)
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    half = t_ppf(0.5 + CONFIDENCE / 2.0, n - 1) * math.sqrt(var / n)
    return Estimate(mean, mean - half, mean + half, n, vals)


@dataclass(frozen=True)
class TestResult:
    """Mann-Whitney U of sample a against sample b."""

    __test__ = False  # not a pytest test class

    u: float          # U of sample a: how often a value of a beats one of b (ties count 1/2)
    p_value: float    # two-sided
    n_a: int
    n_b: int
    method: str       # "exact" or "normal"
    min_p: float      # the smallest p these sample sizes can give (exact, no ties)

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


@lru_cache(maxsize=None)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """How many orderings of n1 + n2 distinct values give U = 0 .. n1*n2."""
    if n1 == 0 or n2 == 0:
        return (1,)
    # U counts pairs (a_i > b_j); the largest value is either an a (adds n2) or a b
    with_a = _u_counts(n1 - 1, n2)
    with_b = _u_counts(n1, n2 - 1)
    out = [0] * (n1 * n2 + 1)
    for u, c in enumerate(with_a):
        out[u + n2] += c
    for u, c in enumerate(with_b):
        out[u] += c
    return tuple(out)


def _exact_p(u: float, n1: int, n2: int) -> float:
    counts = _u_counts(n1, n2)
    total = sum(counts)
    k = min(u, n1 * n2 - u)
    tail = sum(c for i, c in enumerate(counts) if i <= k)
    return min(1.0, 2.0 * tail / total)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Two-sided Mann-Whitney U test of ``a`` against ``b``."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("Mann-Whitney U needs at least one value in each sample")
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
    pooled = sorted(a + b)
    ties = [pooled.count(v) for v in set(pooled)]
    has_ties = any(t > 1 for t in ties)
    min_p = _exact_p(0, n1, n2) if n1 + n2 <= 40 else 0.0
    if not has_ties and n1 + n2 <= 40 and n1 * n2 <= 400:
        return TestResult(u, _exact_p(u, n1, n2), n1, n2, "exact", min_p)
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = sum(t ** 3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    if sigma == 0:
        return TestResult(u, 1.0, n1, n2, "normal", min_p)
    z = (abs(u - mu) - 0.5) / sigma
    return TestResult(u, min(1.0, 2.0 * _normal_sf(max(z, 0.0))), n1, n2, "normal", min_p)
