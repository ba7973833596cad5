"""Plots of a Summary as PNG bytes (matplotlib, Agg, no pyplot global state).

- ``timeseries``: one run's throughput, cwnd and RTT over time per flow, and
  the bottleneck queue backlog (tcp_info.csv, qdisc.csv);
- ``rtt_cdf``: the CDF of smoothed RTT samples per group;
- ``throughput_delay``: Pantheon-style scatter, goodput against 95th
  percentile queueing delay, one point per run and a marker per group mean;
- ``metric_sweep``: goodput, share, RTT p95 and Jain's index (mean, 95 % CI)
  against one swept variable, one line per congestion control (or other
  label); ``loss_sweep`` is its goodput against ``loss``;
- ``time_sequence``: one connection's tcptrace-style graph from the pcap.

Colours come from ``palette(n)``, distinct for as many groups as there are.
"""

from __future__ import annotations

import bisect
import functools
import io
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

from testbed.analysis.metrics import METRICS, RunView, backlog_series, socket_history
from testbed.analysis.stats import Estimate, mean_ci
from testbed.analysis.summary import Row, Summary, sort_key
from testbed.analysis.tsg import TimeSequence

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")
# the light halves of matplotlib's tab20, after the ten above: 20 colours told apart
_LIGHT = ("#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2",
          "#c7c7c7", "#dbdb8d", "#9edae5")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def palette(n: int) -> list[str]:
    """``n`` colours no two alike: the ten above, then their light halves, then hues spread
    around the circle at alternating lightness (a sweep has 20 groups and more)."""
    if n <= len(COLORS) + len(_LIGHT):
        return list(COLORS + _LIGHT)[:max(n, 0)]
    import colorsys
    out = []
    for i in range(n):
        r, g, b = colorsys.hls_to_rgb((i * 0.618033988749895) % 1.0, 0.35 + 0.25 * (i % 3) / 2, 0.75)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


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


def _spread(bins: dict[int, float], t0: float, t1: float, amount: float, bin_s: float) -> None:
    """Add ``amount`` sent evenly over [t0, t1] to the bins it overlaps, each its part."""
    if t1 <= t0:
        bins[int(t1 // bin_s)] = bins.get(int(t1 // bin_s), 0.0) + amount
        return
    k = int(t0 // bin_s)
    while k * bin_s < t1:
        overlap = min(t1, (k + 1) * bin_s) - max(t0, k * bin_s)
        if overlap > 0:
            bins[k] = bins.get(k, 0.0) + amount * overlap / (t1 - t0)
        k += 1


def throughput_series(view: RunView, bin_s: float | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per flow, (bin end, bit/s) from tcp_info bytes_acked differences.

    The bytes acknowledged between two samples are spread over the time between them:
    counted whole in the bin of the later sample, a sampling gap or a sample just past a
    bin's edge put two intervals' bytes in one bin (twice the link rate)."""
    sockets = _per_socket(view)
    t_max = max((r["t"] for rows in sockets.values() for r in rows), default=0.0)
    if bin_s is None:
        bin_s = max(0.1, round(t_max / 40, 1))
    bins: dict[str, dict[int, float]] = {}
    for (flow, _), rows in sockets.items():
        prev: tuple[float, float] | None = None
        for r in rows:
            acked = r.get("bytes_acked")
            if acked is None:
                continue
            if prev is not None and acked >= prev[1]:
                _spread(bins.setdefault(flow, {}), prev[0], r["t"], acked - prev[1], bin_s)
            prev = (r["t"], acked)
    out = {}
    for flow, b in bins.items():
        last = max(b)
        out[flow] = [((k + 1) * bin_s, b.get(k, 0.0) * 8 / bin_s) for k in range(last + 1)]
    return out


def _established(view: RunView, flows: Sequence[str] | None
                 ) -> list[tuple[str, list[dict[str, Any]]]]:
    """(flow, samples) of each data socket: established and seen more than once."""
    out = []
    for (flow, _), rows in sorted(_per_socket(view).items(), key=lambda kv: str(kv[0])):
        est = [r for r in rows if r.get("state") == "ESTABLISHED"]
        if len(est) >= 2 and (flows is None or flow in flows):
            out.append((flow, est))
    return out


def _series(ax: Any, rows: list[dict[str, Any]], column: str, scale: float, **style: Any) -> None:
    pts = [(r["t"], r[column] * scale) for r in rows if r.get(column) is not None]
    if pts:
        ax.plot([t for t, _ in pts], [v for _, v in pts], **style)


_CA_MARK = {"recovery": ("^", "#ff7f0e"), "loss": ("s", "#d62728"), "cwr": ("v", "#9467bd"),
            "disorder": ("d", "#8c564b"), "open": ("o", "#2ca02c")}


def _cwnd_at(rows: list[dict[str, Any]], times: Sequence[float]) -> list[float]:
    """The cwnd of the last sample at or before each time (events fall between samples)."""
    ts = [r["t"] for r in rows]
    return [rows[max(bisect.bisect_right(ts, t) - 1, 0)].get("cwnd") or 0 for t in times]


def _cwnd_panel(ax: Any, view: RunView, flow_rows: list[tuple[str, list[dict[str, Any]]]],
                color: dict[str, str]) -> None:
    """cwnd, ssthresh (dashed), retransmissions (x) and ca_state changes (markers)."""
    seen: set[str] = set()
    for flow, rows in flow_rows:
        c = color.get(flow, "k")
        _series(ax, rows, "cwnd", 1.0, color=c, lw=0.8)
        _series(ax, rows, "ssthresh", 1.0, color=c, lw=0.8, ls="--")
        history = socket_history(view.run, rows)
        if history.retransmissions:
            ax.scatter(history.retransmissions, _cwnd_at(rows, history.retransmissions),
                       marker="x", color="#d62728", s=16, zorder=3)
        for t, state in history.ca_changes:
            marker, mc = _CA_MARK.get(state, ("o", "#7f7f7f"))
            ax.scatter([t], _cwnd_at(rows, [t]), marker=marker, color=mc, s=22, zorder=4)
            seen.add(state)
    ax.set_ylabel("cwnd (solid), ssthresh\n(dashed), packets", fontsize=8)
    handles = [_legend_mark(ax, "x", "#d62728", "retransmission")] + \
        [_legend_mark(ax, m, c, f"ca_state -> {s}") for s, (m, c) in _CA_MARK.items() if s in seen]
    ax.legend(handles=handles, fontsize=7, loc="upper right")


def _legend_mark(ax: Any, marker: str, color: str, label: str) -> Any:
    from matplotlib.lines import Line2D
    return Line2D([], [], marker=marker, color=color, ls="", label=label)


def schedule_events(view: RunView) -> list[tuple[float, str]]:
    """(time on the run clock, what) of each link schedule action the manifest records."""
    out = []
    for e in view.run.manifest.get("link_schedule") or []:
        if not isinstance(e, dict) or e.get("skipped"):
            continue
        t = e.get("at_s", e.get("planned_s"))
        if isinstance(t, (int, float)):
            out.append((float(t), f"{e.get('link', '')}: {e.get('set', e.get('action', ''))}"))
    return out


@_plain
def timeseries(view: RunView, title: str, *, since: float | None = None,
               until: float | None = None, flows: Sequence[str] | None = None) -> bytes:
    """Per flow over time: throughput with pacing rate and BBR's bandwidth estimate; cwnd
    with ssthresh, retransmissions and ca_state changes; RTT; BBR's gains when there are
    any; the queue backlog. Link schedule actions are vertical lines."""
    flow_rows = _established(view, flows)
    bbr = any(r.get("bbr_pacing_gain") is not None for _, rows in flow_rows for r in rows)
    fig = _figure(9.5 if bbr else 8.0)
    axes = fig.subplots(5 if bbr else 4, 1, sharex=True)
    names = [n for n in view.flow_names() if flows is None or n in flows]
    color = dict(zip(names, palette(len(names))))
    for flow, pts in sorted(throughput_series(view).items()):
        if flow in color:
            axes[0].plot([t for t, _ in pts], [v / 1e6 for _, v in pts], label=flow,
                         color=color[flow], drawstyle="steps-post")
    for flow, rows in flow_rows:
        c = color.get(flow, "k")
        _series(axes[0], rows, "pacing_rate_bps", 1e-6, color=c, lw=0.6, ls="--")
        _series(axes[0], rows, "bbr_bw_bps", 1e-6, color=c, lw=0.8, ls=":")
        _series(axes[2], rows, "srtt_us", 1e-3, color=c, lw=0.8)
        _series(axes[2], rows, "min_rtt_us", 1e-3, color=c, lw=0.6, ls=":")
        if bbr:
            _series(axes[3], rows, "bbr_pacing_gain", 1.0, color=c, lw=0.8)
            _series(axes[3], rows, "bbr_cwnd_gain", 1.0, color=c, lw=0.8, ls="--")
    _cwnd_panel(axes[1], view, flow_rows, color)
    label, backlog = backlog_series(view.run)
    if backlog:
        axes[-1].plot([t for t, _ in backlog], [b / 1e3 for _, b in backlog], color="#444", lw=0.8)
    axes[0].set_ylabel("throughput (solid)\npacing (--), BBR bw (:)\nMbit/s", fontsize=8)
    axes[2].set_ylabel("srtt (solid)\nmin_rtt (:), ms", fontsize=8)
    if bbr:
        axes[3].set_ylabel("BBR pacing gain\n(solid), cwnd gain (--)", fontsize=8)
    axes[-1].set_ylabel(f"backlog (KB)\n{label or 'no qdisc data'}", fontsize=8)
    axes[-1].set_xlabel("time (s since the run's t0)")
    if names:
        axes[0].legend(loc="upper left", fontsize=8)
    _decorate(axes, schedule_events(view), since, until)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def _decorate(axes: Sequence[Any], events: list[tuple[float, str]], since: float | None,
              until: float | None) -> None:
    """Grid, schedule events as labelled vertical lines, and the time range."""
    for ax in axes:
        ax.grid(alpha=0.3)
        for t, _ in events:
            ax.axvline(t, color="#555", ls="-.", lw=0.8)
    for t, what in events:
        axes[0].annotate(what, (t, 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                         rotation=90, va="top", ha="right", color="#555")
    if since is not None or until is not None:
        axes[0].set_xlim(left=since, right=until)


@_plain
def rtt_cdf(rows: Sequence[Row]) -> bytes:
    fig = _figure(4.0)
    ax = fig.subplots()
    colors = palette(len(rows))
    for i, row in enumerate(rows):
        samples = sorted(s * 1e3 for v, names in zip(row.views, row.flows) for s in v.srtt(names))
        if not samples:
            continue
        n = len(samples)
        ax.plot(samples, [(k + 1) / n for k in range(n)], label=row.label(), color=colors[i])
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
    colors = palette(len(rows))
    for i, row in enumerate(rows):
        c = colors[i]
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


def _errorbar_points(rows: Sequence[Row], x_key: str, xs_all: list[str],
                     estimate: Callable[[Row], Estimate], scale: float
                     ) -> list[tuple[int, float, float, float]]:
    """(x index, mean, distance to CI low, to CI high) of each row with a value, by x."""
    pts = []
    for r in rows:
        e = estimate(r)
        if e.mean is not None:
            lo = e.mean - (e.ci_low if e.ci_low is not None else e.mean)
            hi = (e.ci_high if e.ci_high is not None else e.mean) - e.mean
            pts.append((xs_all.index(r.labels[x_key]), e.mean * scale, lo * scale, hi * scale))
    return sorted(pts)


def _run_jain(row: Row) -> Estimate:
    """Jain's index over every flow of each run of the row (not only the row's split)."""
    return mean_ci([METRICS["jain"].fn(v, v.flow_names()) for v in row.views])


SWEEP_METRICS = ("goodput", "share", "rtt_p95", "jain")
_SCALE = {"bps": (1e-6, "Mbit/s"), "s": (1e3, "ms"), "fraction": (100.0, "%"), "ratio": (1.0, "")}


def _sweep_panel(ax: Any, summary: Summary, x_key: str, metric: str, xs_all: list[str]) -> bool:
    """One metric against ``x_key``, a line per value of the other labels; False if no data."""
    run_level = metric == "jain"        # a property of the run's flows together, not of a split
    others = [k for k in summary.dims + ([] if run_level else summary.flow_by) if k != x_key]
    lines: dict[tuple[str, ...], list[Row]] = {}
    for r in summary.rows:
        lines.setdefault(tuple(r.labels.get(k, "") for k in others), []).append(r)
    colors = palette(len(lines))
    scale, unit = _SCALE.get(METRICS[metric].unit, (1.0, ""))
    drawn = False
    for i, (key, rows) in enumerate(sorted(lines.items())):
        if run_level:   # split rows of one point share their runs: keep one
            rows = list({r.labels[x_key]: r for r in rows}.values())
        pts = _errorbar_points(rows, x_key, xs_all,
                               _run_jain if run_level else (lambda r: r.estimate(metric)), scale)
        if not pts:
            continue
        drawn = True
        label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or \
            ("all flows of a run" if run_level else metric)
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                    yerr=[[p[2] for p in pts], [p[3] for p in pts]], marker=MARKERS[i % len(MARKERS)],
                    capsize=3, label=label, color=colors[i])
    ax.set_xticks(range(len(xs_all)), xs_all)
    ax.set_ylabel(f"{metric}\n({unit})" if unit else metric)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    return drawn


@_plain
def metric_sweep(summary: Summary, x_key: str, metrics: Sequence[str] = SWEEP_METRICS
                 ) -> bytes | None:
    """Each metric (mean, 95 % CI) against the swept variable ``x_key``, one line per other
    label (cc when flows are split); None if ``x_key`` is not swept or nothing has data."""
    if x_key not in summary.dims:
        return None
    xs_all = sorted({r.labels[x_key] for r in summary.rows}, key=sort_key)
    if len(xs_all) < 2:
        return None         # pinned, not swept
    wanted = [m for m in metrics if m != "share" or summary.flow_by]
    fig = _figure(2.6 * len(wanted) + 0.6)
    axes = fig.subplots(len(wanted), 1, sharex=True, squeeze=False)[:, 0]
    drawn = [_sweep_panel(ax, summary, x_key, m, xs_all) for ax, m in zip(axes, wanted)]
    if not any(drawn):
        return None
    axes[-1].set_xlabel(x_key)
    fig.suptitle(f"{', '.join(wanted)} against {x_key} (mean, 95 % CI over repetitions)",
                 fontsize=10)
    return _png(fig)


def loss_sweep(summary: Summary, loss_key: str = "loss") -> bytes | None:
    """Goodput (mean, 95 % CI) against the loss variable, one line per other label; None if no loss dim."""
    return metric_sweep(summary, loss_key, ("goodput",))


def _in_range(t: float, since: float | None, until: float | None) -> bool:
    return (since is None or t >= since) and (until is None or t <= until)


@_plain
def time_sequence(ts: TimeSequence, title: str, since: float | None = None,
                  until: float | None = None) -> bytes:
    """tcptrace-style: segments as bars (retransmissions red), ACK line, receive-window edge
    and SACK blocks, sequence offsets in KB, within [since, until]."""
    fig = _figure(5.5, 9.0)
    ax = fig.subplots()

    def keep(rows: list[Any]) -> list[Any]:
        return [r for r in rows if _in_range(r[0], since, until)]

    for rows, color, label in ((keep(ts.segments), "#1f1f1f", "data segments"),
                               (keep(ts.retransmits), "#d62728", "retransmissions")):
        if rows:
            ax.vlines([t for t, _, _ in rows], [s / 1e3 for _, s, _ in rows],
                      [e / 1e3 for _, _, e in rows], colors=color, lw=1.2 if color != "#1f1f1f"
                      else 0.8, label=label)
    if keep(ts.retransmits):
        ax.scatter([t for t, _, _ in keep(ts.retransmits)],
                   [e / 1e3 for _, _, e in keep(ts.retransmits)], marker="x", color="#d62728", s=18)
    for rows, color, label in ((keep(ts.acks), "#2ca02c", "cumulative ACK"),
                               (keep(ts.window), "#ff7f0e", "receive window edge (ACK + rwnd)")):
        if rows:
            ax.plot([t for t, _ in rows], [v / 1e3 for _, v in rows], color=color, lw=0.9,
                    drawstyle="steps-post", label=label)
    sacks = keep(ts.sacks)
    if sacks:
        ax.vlines([t for t, _, _ in sacks], [a / 1e3 for _, a, _ in sacks],
                  [b / 1e3 for _, _, b in sacks], colors="#9467bd", lw=2.5, alpha=0.6,
                  label="SACK blocks")
    ax.set_xlabel(f"time ({ts.clock})")
    ax.set_ylabel("sequence offset (KB from the ISN)")
    ax.set_title(f"{title}\n{ts.connection}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if since is not None or until is not None:
        ax.set_xlim(left=since, right=until)
    return _png(fig)
