"""Jitter distributions with netem's semantics, as pure functions.

netem draws a delay as ``mu + sigma * t / NETEM_DIST_SCALE`` where ``t`` is a
random entry of a 4096-entry table of the inverse CDF of a standardised
distribution (iproute2's netem/normal.c, pareto.c, paretonormal.c), or, with
no table, uniformly from ``[mu - sigma, mu + sigma)``. The tables are rebuilt
here with the same formulas, so the userspace delay line and the statistics
the tests check against follow the same distribution as the kernel's.
Negative results are clamped to zero (a packet cannot leave before it came).
"""

from __future__ import annotations

import math
from statistics import NormalDist

NETEM_DIST_SCALE = 8192
TABLE_BITS = 12
TABLE_SIZE = 1 << TABLE_BITS  # 4096 entries, as iproute2 writes them
_GEN_SIZE = 16384  # iproute2 computes 16384 quantiles and keeps every 4th
_PARETO_SHAPE = 3.0
_SHRT_MAX = 32767
_SHRT_MIN = -32768


def _normal_quantiles() -> list[float]:
    # iproute2 keeps the last x on a fine grid with rint(16384*Phi(x)) == i,
    # which is Phi^-1((i + 0.5) / 16384).
    nd = NormalDist()
    return [nd.inv_cdf((i + 0.5) / _GEN_SIZE) for i in range(0, _GEN_SIZE, 4)]


def _pareto_value(j: int) -> int:
    """pareto.c/paretonormal.c: scaled (X - 1.5) * 4/3 for X ~ Pareto(1, 3)."""
    u = j / 65536.0
    value = (1.0 / u ** (1.0 / _PARETO_SHAPE) - 1.5) * (4.0 / 3.0) * NETEM_DIST_SCALE
    return int(round(min(value, _SHRT_MAX)))


def netem_table(name: str) -> list[int]:
    """The 4096 int16 entries netem would load for distribution ``name``."""
    if name == "normal":
        return [max(_SHRT_MIN, min(_SHRT_MAX, int(round(x * NETEM_DIST_SCALE))))
                for x in _normal_quantiles()]
    if name == "pareto":
        return [_pareto_value(j) for j in range(65536, 0, -16)]
    if name == "paretonormal":
        table = []
        for k, x in enumerate(_normal_quantiles()):
            norm = int(round(x * NETEM_DIST_SCALE))
            par = _pareto_value(65536 - 4 * (4 * k))
            value = int((norm + 3 * par) / 4)  # C integer division truncates
            table.append(max(_SHRT_MIN, min(_SHRT_MAX, value)))
        return table
    raise ValueError(f"no netem table for distribution {name!r}")


def standard_factors(name: str | None) -> tuple[float, float]:
    """(mean, std dev) of the delay offset per unit of jitter for ``name``.

    ``None`` and ``"uniform"`` are netem's table-less uniform jitter.
    Multiply by the configured jitter to get what a measurement should show
    (before clamping negative delays to zero).
    """
    if name in (None, "uniform"):
        return 0.0, 1.0 / math.sqrt(3.0)
    table = [t / NETEM_DIST_SCALE for t in netem_table(name)]
    mean = sum(table) / len(table)
    var = sum((t - mean) ** 2 for t in table) / len(table)
    return mean, math.sqrt(var)


def offsets_table(name: str | None) -> list[float] | None:
    """Table entries as multiples of the jitter, or None for uniform."""
    if name in (None, "uniform"):
        return None
    return [t / NETEM_DIST_SCALE for t in netem_table(name)]
