"""One clock for a run: seconds since the run's t0, as ``tcp_info.csv``'s ``t``.

Every CSV of a run (tcp_info, tcp_events, qdisc, host, pcap_rtt) counts from t0
(``time.monotonic()`` when the flows were started); packet captures carry epoch
times. The manifest records t0 on both clocks, taken together::

    "clock": {"t0_monotonic": 12345.678, "t0_epoch": 1764500000.123}

so that an epoch time ``e`` is ``e - t0_epoch`` seconds on the run's clock.
A run without the field (older runs) has only the tcp_info clock: callers
then fall back to a clock of their own and say which.
"""

from __future__ import annotations

from typing import Any

from testbed.analysis.runs import Run
from testbed.errors import ResultsError

CLOCK_FIELD = "clock"
EPOCH_FIELD = "t0_epoch"
MONOTONIC_FIELD = "t0_monotonic"
RUN_CLOCK = "s since the run's t0 (the tcp_info clock)"


def t0_epoch(run: Run) -> float | None:
    """The epoch time of the run's t0, or None when the manifest does not record it."""
    clock: Any = run.manifest.get(CLOCK_FIELD)
    if clock is None:
        return None
    value = clock.get(EPOCH_FIELD) if isinstance(clock, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ResultsError(f"{run.path / 'manifest.json'}: {CLOCK_FIELD}.{EPOCH_FIELD} must be "
                           f"the epoch time of t0 (a positive number), got {value!r}")
    return float(value)


def epoch_to_run(run: Run, epoch: float) -> float | None:
    """An epoch time (a pcap's, pcap_rtt.csv's) as seconds on the run's clock; None without t0."""
    zero = t0_epoch(run)
    return None if zero is None else epoch - zero
