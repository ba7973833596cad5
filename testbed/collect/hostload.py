"""Host CPU and load over a run (psutil), and the verdict whether the host
was too busy for the run to be trusted."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from testbed.collect.damage import sampler_losses

SATURATED_CPU = 90.0       # percent of one core, per core
SUSPECT_FRACTION = 0.25    # share of samples with a saturated core that makes a run suspect


@dataclass
class HostLoadSampler:
    """Samples per-core CPU percent and load average every ``interval`` seconds."""

    interval: float = 0.5
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0

    def start(self, t0: float) -> None:
        self._t0 = t0
        psutil.cpu_percent(percpu=True)  # prime: the first call returns nothing useful
        self._thread = threading.Thread(target=self._run, name="hostload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                per_cpu = psutil.cpu_percent(percpu=True)
                load1 = os.getloadavg()[0]
                self.rows.append({"t": round(time.monotonic() - self._t0, 3),
                                  "cpu_max": max(per_cpu), "cpu_mean": sum(per_cpu) / len(per_cpu),
                                  "load1": load1, **{f"cpu{i}": v for i, v in enumerate(per_cpu)}})
        except BaseException as exc:  # reported by the orchestrator (losses), not swallowed
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def losses(self) -> list[str]:
        """What the run lost of this collector (it stopped on an error), for its record."""
        return sampler_losses("host load", self.error, self.rows)


def verdict(rows: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """(suspect, reasons): a run is suspect when every core was saturated too often."""
    if not rows:
        return False, []
    saturated = sum(1 for r in rows if r["cpu_mean"] >= SATURATED_CPU)
    reasons = []
    if saturated / len(rows) >= SUSPECT_FRACTION:
        reasons.append(f"host CPU saturated (all cores >= {SATURATED_CPU:.0f}%) in "
                       f"{saturated}/{len(rows)} samples: timing and rates may reflect the host, "
                       "not the network")
    return bool(reasons), reasons
