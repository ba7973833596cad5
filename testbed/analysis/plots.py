"""Plots of a Summary as PNG bytes (matplotlib, Agg, no pyplot global state).

- ``timeseries``: one run's throughput, cwnd and RTT over time per flow, and
  the bottleneck queue backlog (tcp_info.csv, qdisc.csv);
- ``rtt_cdf``: the CDF of smoothed RTT samples per group;
- ``throughput_delay``: Pantheon-style scatter, goodput against 95th
  percentile queueing delay, one point per run and a marker per group mean;
- ``loss_sweep``: goodput (mean, 95 % CI) against the ``loss`` variable, one
  line per congestion control (or per other label).
"""

from __future__ import annotations

import functools
import io
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

from testbed.analysis.metrics import RunView, backlog_series
from testbed.analysis.summary import Row, Summary, normalize

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")


F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def plain_text() -> Iterator[None]:
    """Text made inside is shown as written: matplotlib would read what lies between two
    '$' (a variable's value, a flow's name) as mathtext, and fail on a lone one; no TeX."""
    import matplotlib
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


def _plain(plot: F) -> F:
    """``plot`` draws and saves under ``plain_text``."""
    @functools.wraps(plot)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plain_text():
            return plot(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _figure(height: float, width: float = 8.0) -> Any:
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=90, layout="constrained")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _per_socket(view: RunView) -> dict[tuple[str, Any], list[dict[str, Any]]]:
    out: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in view.run.tcp_info():
        if r.get("flow") and r.get("t") is not None:
            out.setdefault((r["flow"], r.get("sport")), []).append(r)
    return out


def throughput_series(view: RunView, bin_s: float | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per flow, (bin end, bit/s) from tcp_info bytes_acked differences."""
    sockets = _per_socket(view)
    t_max = max((r["t"] for rows in sockets.values() for r in rows), default=0.0)
    if bin_s is None:
        bin_s = max(0.1, round(t_max / 40, 1))
    bins: dict[str, dict[int, float]] = {}
    for (flow, _), rows in sockets.items():
        prev = None
        for r in rows:
            acked = r.get("bytes_acked")
            if acked is None:
                continue
            if prev is not None and acked >= prev:
                k = int(r["t"] // bin_s)
                bins.setdefault(flow, {}).setdefault(k, 0.0)
                bins[flow][k] += acked - prev
            prev = acked
    out = {}
    for flow, b in bins.items():
        last = max(b)
        out[flow] = [((k + 1) * bin_s, b.get(k, 0.0) * 8 / bin_s) for k in range(last + 1)]
    return out


@_plain
def timeseries(view: RunView, title: str) -> bytes:
    """Throughput, cwnd, RTT per flow and queue backlog of one run, over time."""
    fig = _figure(8.0)
    axes = fig.subplots(4, 1, sharex=True)
    names = view.flow_names()
    color = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    for flow, pts in sorted(throughput_series(view).items()):
        axes[0].plot([t for t, _ in pts], [v / 1e6 for _, v in pts], label=flow,
                     color=color.get(flow, "k"), drawstyle="steps-post")
    for (flow, sport), rows in sorted(_per_socket(view).items(), key=lambda kv: str(kv[0])):
        est = [r for r in rows if r.get("state") == "ESTABLISHED"]
        if len(est) < 2:
            continue  # control connections and sockets seen once
        axes[1].plot([r["t"] for r in est], [r.get("cwnd") for r in est], color=color.get(flow, "k"),
                     lw=0.8)
        axes[2].plot([r["t"] for r in est], [(r.get("srtt_us") or 0) / 1e3 for r in est],
                     color=color.get(flow, "k"), lw=0.8)
    label, backlog = backlog_series(view.run)
    if backlog:
        axes[3].plot([t for t, _ in backlog], [b / 1e3 for _, b in backlog], color="#444", lw=0.8)
    axes[0].set_ylabel("throughput\n(Mbit/s)")
    axes[1].set_ylabel("cwnd\n(packets)")
    axes[2].set_ylabel("smoothed RTT\n(ms)")
    axes[3].set_ylabel(f"backlog (KB)\n{label or 'no qdisc data'}", fontsize=8)
    axes[3].set_xlabel("time (s)")
    if names:
        axes[0].legend(loc="upper right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


@_plain
def rtt_cdf(rows: Sequence[Row]) -> bytes:
    fig = _figure(4.0)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        samples = sorted(s * 1e3 for v, names in zip(row.views, row.flows) for s in v.srtt(names))
        if not samples:
            continue
        n = len(samples)
        ax.plot(samples, [(k + 1) / n for k in range(n)], label=row.label(), color=COLORS[i % len(COLORS)])
    ax.set_xlabel("smoothed RTT (ms)")
    ax.set_ylabel("fraction of samples")
    ax.set_title("RTT CDF per group (tcp_info srtt)", fontsize=10)
    ax.grid(alpha=0.3)
    if rows:
        ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


@_plain
def throughput_delay(rows: Sequence[Row]) -> bytes:
    """Pantheon-style: goodput (up) against 95th percentile queueing delay (right is worse)."""
    fig = _figure(4.5)
    ax = fig.subplots()
    for i, row in enumerate(rows):
        c = COLORS[i % len(COLORS)]
        xs = row.values("qdelay_p95")
        ys = row.values("goodput")
        pts = [(x * 1e3, y / 1e6) for x, y in zip(xs, ys) if x is not None and y is not None]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=c, alpha=0.5, s=18)
        mx = sum(p[0] for p in pts) / len(pts)
        my = sum(p[1] for p in pts) / len(pts)
        ax.scatter([mx], [my], color=c, marker="D", s=60, edgecolor="k", label=row.label())
    ax.invert_xaxis()
    ax.set_xlabel("95th percentile queueing delay (ms, srtt - min_rtt; better to the right)")
    ax.set_ylabel("goodput (Mbit/s)")
    ax.set_title("Throughput vs delay (points: runs, diamonds: group means)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


@_plain
def loss_sweep(summary: Summary, loss_key: str = "loss") -> bytes | None:
    """Goodput (mean, 95 % CI) against the loss variable, one line per other label; None if no loss dim."""
    if loss_key not in summary.dims:
        return None
    others = [k for k in summary.dims + summary.flow_by if k != loss_key]
    xs_all = sorted({r.labels[loss_key] for r in summary.rows}, key=lambda v: normalize(v)[1])
    lines: dict[tuple[str, ...], list[Row]] = {}
    for r in summary.rows:
        lines.setdefault(tuple(r.labels.get(k, "") for k in others), []).append(r)
    fig = _figure(4.5)
    ax = fig.subplots()
    for i, (key, rows) in enumerate(sorted(lines.items())):
        pts = []
        for r in rows:
            e = r.estimate("goodput")
            if e.mean is not None:
                lo = e.mean - (e.ci_low if e.ci_low is not None else e.mean)
                hi = (e.ci_high if e.ci_high is not None else e.mean) - e.mean
                pts.append((xs_all.index(r.labels[loss_key]), e.mean / 1e6, lo / 1e6, hi / 1e6))
        pts.sort()
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or "goodput"
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[[p[2] for p in pts], [p[3] for p in pts]],
                    marker="o", capsize=3, label=label, color=COLORS[i % len(COLORS)])
    ax.set_xticks(range(len(xs_all)), xs_all)
    ax.set_xlabel(f"{loss_key} (random loss rate)")
    ax.set_ylabel("goodput (Mbit/s)")
    ax.set_ylim(bottom=0)
    ax.set_title("Goodput vs loss rate (mean, 95 % CI over repetitions)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
