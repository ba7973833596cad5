"""validate's judgements, pure: a measured quantity against its configured value and
tolerance (the module docstring of ``validate`` gives the tolerances), the report
they make, and the rates read off (time, bytes) samples."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from testbed.model.impairment import Aqm, GilbertElliott, Impairment
from testbed.results import percentile
from testbed.units import Duration

Z_999 = 3.29  # two-sided 99.9 % normal quantile


@dataclass
class Check:
    """One quantity: configured vs measured, and whether it is within tolerance."""

    name: str
    configured: str
    measured: str
    ok: bool | None          # None: reported, not judged
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class DirectionReport:
    link: str
    direction: str
    configured: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)


@dataclass
class Report:
    instance: str
    backend: str | None
    directions: list[DirectionReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.directions)

    def to_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "backend": self.backend, "ok": self.ok,
                "directions": [dict(asdict(d), ok=d.ok) for d in self.directions]}

    def render(self) -> str:
        out = [f"testbed {self.instance}: link backend {self.backend}"]
        for d in self.directions:
            out.append(f"{d.link} {d.direction}: {d.configured}  "
                       f"[{'ok' if d.ok else 'OUT OF TOLERANCE'}]")
            for c in d.checks:
                mark = {True: "ok", False: "FAIL", None: "--"}[c.ok]
                out.append(f"   {c.name:<9} configured {c.configured:<22} measured "
                           f"{c.measured:<40} {mark}")
                if c.detail.get("note"):
                    out.append(f"             ({c.detail['note']})")
        if not self.directions:
            out.append("no emulated links")
        out.append("all links within tolerance" if self.ok else "some links are OUT OF TOLERANCE")
        return "\n".join(out)


# -- statistics (pure) ------------------------------------------------------
def wilson(lost: int, sent: int, z: float = Z_999) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if sent <= 0:
        return 0.0, 1.0
    p = lost / sent
    denom = 1 + z * z / sent
    centre = (p + z * z / (2 * sent)) / denom
    half = z * math.sqrt(p * (1 - p) / sent + z * z / (4 * sent * sent)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rtt_check(rtts_ms: list[float], sent: int, configured_ms: float,
              jitter_ms: float) -> Check:
    """RTT mean and p50 against the configured round trip (pure)."""
    if not rtts_ms:
        return Check("rtt", f"{configured_ms:g} ms", f"no replies of {sent}", False)
    mean, p50, p99 = statistics.mean(rtts_ms), percentile(rtts_ms, 50), percentile(rtts_ms, 99)
    tol = max(1.0, 0.05 * configured_ms) + jitter_ms
    # the mean takes the tail: a CPU-starved moment adds tens of ms to a few probes
    mean_tol = max(3.0, 0.10 * configured_ms) + jitter_ms
    ok = abs(mean - configured_ms) <= mean_tol and abs(p50 - configured_ms) <= tol
    detail = {"mean_ms": mean, "p50_ms": p50, "p99_ms": p99, "replies": len(rtts_ms),
              "sent": sent, "tolerance_p50_ms": tol, "tolerance_mean_ms": mean_tol}
    return Check("rtt", f"{configured_ms:g} ms", f"mean {mean:.2f} p50 {p50:.2f} p99 {p99:.2f} ms",
                 ok, detail)


def loss_check(lost: int, sent: int, imp: Impairment) -> Check:
    lo, hi = wilson(lost, sent)
    measured = (f"{100 * lost / max(sent, 1):.3g}% ({lost}/{sent}, "
                f"99.9% CI {100 * lo:.3g}-{100 * hi:.3g}%)")
    detail = {"lost": lost, "sent": sent, "ci_low": lo, "ci_high": hi}
    if isinstance(imp.loss, GilbertElliott):
        return Check("loss", f"GE mean {100 * imp.loss.mean_loss:.3g}%", measured, None, detail)
    want = imp.loss.fraction if imp.loss is not None else 0.0
    return Check("loss", f"{100 * want:g}%", measured, lo <= want <= hi, detail)


def wire_rate_check(measured_bps: float, configured_bps: float,
                    source: str = "tbf byte counter") -> Check:
    ok = abs(measured_bps - configured_bps) <= 0.05 * configured_bps
    return Check("wire rate", format_bps(configured_bps),
                 f"{format_bps(measured_bps)} ({source})", ok,
                 {"bps": measured_bps, "source": source})


def goodput_check(measured_bps: float, configured_bps: float, mtu: int, judged: bool) -> Check:
    expected = configured_bps * (mtu - 52) / (mtu + 14)
    ok = 0.85 * expected <= measured_bps <= 1.05 * expected if judged else None
    return Check("goodput", f"{format_bps(expected)} (TCP)",
                 format_bps(measured_bps) + " (iperf3)", ok,
                 {"bps": measured_bps, "expected_bps": expected})


PER_PASS_TARGET_MS = {"mean": 0.05, "p99": 0.3}    # the link engine's, quiet (issue 11)


def per_pass_check(rtts_ms: list[float], configured_ms: float, passes: int,
                   base_ms: float | None, base_from: str) -> Check:
    """What each of ``passes`` delayed directions adds beyond its delay (pure): (RTT -
    configured - ``base_ms``) / passes at the mean, p50 and p99; without a base, the veth
    and the stack count as the delay lines' error. Reported, not judged."""
    base = base_ms or 0.0
    errors = {k: (v - configured_ms - base) / passes for k, v in (
        ("mean", statistics.mean(rtts_ms)), ("p50", percentile(rtts_ms, 50)),
        ("p99", percentile(rtts_ms, 99)))}
    where = f"base {base_ms:.3f} ms from {base_from}" if base_ms is not None else \
        f"no base subtracted: {base_from}"
    measured = (f"mean {errors['mean']:+.3f} p50 {errors['p50']:+.3f} p99 {errors['p99']:+.3f}"
                f" ms x {passes}")
    return Check("per pass", "+0 ms per delayed direction", measured, None,
                 {"error_ms": errors, "passes": passes, "base_ms": base_ms, "note": where,
                  "target_ms": PER_PASS_TARGET_MS})


def standing_queue_check(quiet_ms: list[float], loaded_ms: list[float], aqm: Aqm,
                         rate_bps: float, buffer_bytes: int, goodput_bps: float) -> Check:
    """The standing queue under a saturating flow (loaded RTT - quiet RTT, pure) against
    what the discipline holds: its target (codel, fq_codel, pie), the buffer (fifo), the
    thresholds (red: reported). Not judged if the flow did not reach half the rate."""
    if not quiet_ms or not loaded_ms:
        return Check("queue", aqm.kind, f"not measured ({len(quiet_ms)} quiet, "
                     f"{len(loaded_ms)} loaded RTTs)", False)
    quiet = percentile(quiet_ms, 50)
    standing = {p: percentile(loaded_ms, q) - quiet for p, q in (("p50", 50), ("p90", 90),
                                                                 ("p99", 99))}
    low, high, expected = _standing_expected(aqm, rate_bps, buffer_bytes)
    saturated = goodput_bps >= 0.5 * rate_bps
    ok = None if high is None or not saturated else low <= standing["p50"] <= high
    measured = (f"p50 {standing['p50']:.1f} p90 {standing['p90']:.1f} p99 "
                f"{standing['p99']:.1f} ms over quiet {quiet:.2f} ms")
    return Check("queue", expected, measured, ok,
                 {"standing_ms": standing, "quiet_p50_ms": quiet, "low_ms": low,
                  "high_ms": high, "loaded": len(loaded_ms), "quiet": len(quiet_ms),
                  "goodput_bps": goodput_bps,
                  **({} if saturated else {"note": "the TCP flow reached only "
                                           f"{format_bps(goodput_bps)}: not saturated, "
                                           "not judged"})})


def _standing_expected(aqm: Aqm, rate_bps: float, buffer_bytes: int
                       ) -> tuple[float, float | None, str]:
    """(lowest, highest standing p50 in ms (None: not judged), what is expected)."""
    drain_ms = buffer_bytes * 8 / rate_bps * 1e3
    if aqm.kind == "fifo":
        return 0.5 * drain_ms, drain_ms + 5.0, f"fifo: near the buffer ({drain_ms:.0f} ms)"
    if aqm.kind == "red":
        return (drain_ms / 12, None,
                f"red: between {drain_ms / 12:.0f} and {drain_ms / 4:.0f} ms (thresholds)")
    target_ms = (aqm.resolved().target or Duration(0.005)).seconds * 1e3
    high = max(3 * target_ms, target_ms + 10.0)
    return 0.0, high, f"{aqm.kind}: near its target {target_ms:g} ms (p50 <= {high:g})"


def format_bps(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def steady_rate(samples: list[tuple[float, int]], window: float = 0.5) -> float | None:
    """The highest rate (bit/s) over any ``window`` seconds of (time, bytes) samples.

    While the tbf is backlogged it sends at exactly its rate (plus at most
    its small burst); anything upstream that pauses (a CPU-starved delay
    daemon, the sender) only lowers a window, so the maximum is the rate
    the tbf enforces, robust to a loaded machine.
    """
    best = None
    j = 0
    for i in range(len(samples)):
        while j < len(samples) and samples[j][0] - samples[i][0] < window:
            j += 1
        if j == len(samples):
            break
        (t0, b0), (t1, b1) = samples[i], samples[j]
        rate = (b1 - b0) * 8 / (t1 - t0)
        best = rate if best is None else max(best, rate)
    return best


def mean_rate(samples: list[tuple[float, int]], skip: float = 0.5) -> float | None:
    """The mean rate (bit/s) of (time, bytes) samples after the first ``skip`` seconds (the
    queue filling): for a counter behind the link engine, whose late releases come out
    in catch-up bursts that a best window would count as rate."""
    kept = [x for x in samples if x[0] - samples[0][0] >= skip] if samples else []
    if len(kept) < 2 or kept[-1][0] <= kept[0][0]:
        return None
    return (kept[-1][1] - kept[0][1]) * 8 / (kept[-1][0] - kept[0][0])
