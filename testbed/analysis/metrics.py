"""Metrics of one run over a chosen set of its flows, in base units.

Every metric is a pure function ``(RunView, flow names) -> float | None`` in a
literal registry (``METRICS``). Base units: bit/s, seconds, fractions, bytes,
counts, so that assertions can say ``rtt_p99 < 100ms`` or ``retrans < 1%``.

Sources, per metric:
- goodput: the drivers' byte counts over the flow duration (``result.json``);
- RTT percentiles and queueing delay: the kernel's smoothed RTT in
  ``tcp_info.csv`` (samples of established sockets), queueing delay being each
  sample's srtt minus the socket's min_rtt;
- retransmission rate: bytes retransmitted / bytes sent from each socket's
  last tcp_info sample;
- request/response latency: every transaction of the selected rr flows, from
  their clients' raw output;
- utilisation: goodput / the bottleneck rate (the rate of the tbf qdisc that
  carried the most bytes, from the manifest; else the ``rate`` variable);
- the bottleneck queue (backlog, sojourn): the samples in ``qdisc.csv`` of the
  queue the link engine runs where it is the bottleneck (kind ``engine:<aqm>``,
  userspace backend), else of the kernel qdisc that moved the most bytes;
  drops and CE marks: per queue in ``result.json``'s ``summary.qdisc_drops``,
  the most of any queue (kernel qdiscs and the engine's alike);
- what the lessons prove (slow start growth, multiplicative decreases,
  recoveries and RTOs, receive-window limits): the samples of each flow's
  sending socket in ``tcp_info.csv``; the handshake: SYNs in the capture.
- retransmissions, fast recoveries, loss episodes, RTOs: the kernel's TCP
  events of each flow's sending sockets (``flows[].tcp_events`` in result.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from testbed.analysis.runs import Run
from testbed.analysis.tsg import run_time_sequence
from testbed.errors import ResultsError
from testbed.results import AGENT_CLIENT, ENGINE_QUEUE_KIND, jain_index, percentile, read_json
from testbed.shape import problem
from testbed.units import Rate, UnitError

FLOW_KEYS = ("cc", "flow", "from", "to", "protocol")


def flow_attr(flow: dict[str, Any], key: str) -> str | None:
    """A flow's value for a selector key (cc as read back from its sockets)."""
    if key == "cc":
        cc = flow.get("cc") or flow.get("cc_requested")
        return ",".join(cc) if isinstance(cc, list) else cc
    if key == "flow":
        return flow.get("name")
    value = flow.get(key)
    return None if value is None else str(value)


@dataclass
class RunView:
    """A run with derived per-flow data, computed once."""

    run: Run
    _srtt: dict[str, list[float]] | None = field(default=None, repr=False)
    _qdelay: dict[str, list[float]] | None = field(default=None, repr=False)
    _last: dict[str, list[dict[str, Any]]] | None = field(default=None, repr=False)

    @property
    def flows(self) -> list[dict[str, Any]]:
        return self.run.flows

    def flow_names(self) -> list[str]:
        return [f["name"] for f in self.flows]

    def _index(self) -> None:
        srtt: dict[str, list[float]] = {}
        qdelay: dict[str, list[float]] = {}
        last: dict[tuple[str, Any], dict[str, Any]] = {}
        for row in self.run.tcp_info():
            name = row.get("flow")
            if not name:
                continue
            last[(name, row.get("sport"))] = row
            if row.get("state") != "ESTABLISHED" or not row.get("srtt_us"):
                continue
            s = row["srtt_us"] / 1e6
            srtt.setdefault(name, []).append(s)
            if row.get("min_rtt_us"):
                qdelay.setdefault(name, []).append(max(0.0, s - row["min_rtt_us"] / 1e6))
        self._srtt, self._qdelay = srtt, qdelay
        self._last = {}
        for (name, _), row in last.items():
            self._last.setdefault(name, []).append(row)

    def srtt(self, names: Sequence[str]) -> list[float]:
        if self._srtt is None:
            self._index()
        assert self._srtt is not None
        return [v for n in names for v in self._srtt.get(n, [])]

    def qdelay(self, names: Sequence[str]) -> list[float]:
        if self._qdelay is None:
            self._index()
        assert self._qdelay is not None
        return [v for n in names for v in self._qdelay.get(n, [])]

    def last_samples(self, names: Sequence[str]) -> list[dict[str, Any]]:
        if self._last is None:
            self._index()
        assert self._last is not None
        return [r for n in names for r in self._last.get(n, [])]

    def latencies(self, names: Sequence[str]) -> list[float]:
        """Every request/response latency (s) of the selected flows, from their clients'
        raw output (the percentiles in result.json cannot be merged across flows). A
        client that wrote nothing readable has none (its flow failed, the run says so)."""
        out: list[float] = []
        for f in self.selected(names):
            if f.get("kind") != "rr":
                continue
            path = self.run.path / "raw" / f"{f['name']}.client.json"
            client, _ = read_json(path)
            if client is None:
                continue
            found = problem(client, AGENT_CLIENT)
            if found is not None:
                raise ResultsError(found[1], file=str(path), path=found[0] or None)
            for c in client.get("connections") or []:
                out += [x / 1e6 for x in (c or {}).get("latencies_us") or []]
        return out

    def selected(self, names: Sequence[str]) -> list[dict[str, Any]]:
        wanted = set(names)
        return [f for f in self.flows if f.get("name") in wanted]


# ---- the bottleneck ------------------------------------------------------

def _tbf_bytes(nodes: dict[str, Any]) -> dict[tuple[str, str], tuple[int, float | None]]:
    out = {}
    for node, facts in (nodes or {}).items():
        qdiscs = facts.get("qdiscs")
        for q in qdiscs if isinstance(qdiscs, list) else []:   # text: tc -j failed on the host
            if q.get("kind") == "tbf":
                rate = (q.get("options") or {}).get("rate")
                out[(node, q.get("dev"))] = (q.get("bytes") or 0, rate * 8.0 if rate else None)
    return out


def bottleneck(run: Run) -> tuple[str | None, float | None]:
    """``("node:ifname", rate in bit/s)`` of the busiest rate-limited qdisc."""
    before = _tbf_bytes(run.manifest.get("nodes_before") or {})
    after = _tbf_bytes(run.manifest.get("nodes_after") or {})
    best: tuple[float, str, float | None] | None = None
    for key, (b_after, rate) in after.items():
        moved = b_after - before.get(key, (0, None))[0]
        if best is None or moved > best[0]:
            best = (moved, f"{key[0]}:{key[1]}", rate)
    if best is None and before:
        key, (_, rate) = next(iter(before.items()))
        best = (0, f"{key[0]}:{key[1]}", rate)
    where, rate = (best[1], best[2]) if best else (None, None)
    if rate is None and "rate" in run.variables:
        try:
            rate = Rate.parse(run.variables["rate"]).bps
        except UnitError:
            rate = None
    return where, rate


def _queue_key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["node"], r["ifname"], r["kind"], r["handle"])


def _moved(r: dict[str, Any]) -> tuple[int, float]:
    """What a sample counts toward "the busiest queue": the link engine's queues first
    (one exists only where a topology made the engine a direction's bottleneck, with no
    tbf there), then the kernel's qdiscs; by bytes (packets would rank a flow's ACKs,
    as many as its data segments, as busy as the data)."""
    if str(r.get("kind") or "").startswith(ENGINE_QUEUE_KIND):
        return 1, r.get("bytes") if r.get("bytes") is not None else r.get("packets") or 0.0
    return 0, r.get("bytes") or 0.0


def bottleneck_samples(run: Run) -> tuple[str | None, list[dict[str, Any]]]:
    """(label, its rows of qdisc.csv) of the bottleneck queue: the busiest (``_moved``)."""
    rows = [r for r in run.qdisc() if r.get("t") is not None]
    if not rows:
        return None, []
    moved: dict[tuple[Any, ...], tuple[int, float, float]] = {}
    for r in rows:
        rank, b = _moved(r)
        _, lo, hi = moved.get(_queue_key(r), (rank, b, b))
        moved[_queue_key(r)] = (rank, min(lo, b), max(hi, b))
    key = max(moved, key=lambda k: (moved[k][0] if moved[k][2] > moved[k][1] else 0,
                                    moved[k][2] - moved[k][1]))
    return f"{key[0]}:{key[1]} {key[2]}", [r for r in rows if _queue_key(r) == key]


def backlog_series(run: Run) -> tuple[str | None, list[tuple[float, float]]]:
    """(label, [(t, backlog bytes)]) of the bottleneck queue (``bottleneck_samples``)."""
    label, rows = bottleneck_samples(run)
    return label, [(r["t"], r.get("backlog") or 0.0) for r in rows]


# ---- metrics ---------------------------------------------------------------

def _goodput(v: RunView, names: Sequence[str]) -> float | None:
    vals = [f.get("goodput_bps") for f in v.selected(names)]
    vals = [x for x in vals if x is not None]
    return sum(vals) if vals else None


def _share(v: RunView, names: Sequence[str]) -> float | None:
    total = _goodput(v, v.flow_names())
    mine = _goodput(v, names)
    return mine / total if mine is not None and total else None


def _rtt(p: float) -> Callable[[RunView, Sequence[str]], float | None]:
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        return percentile(v.srtt(names), p)
    return metric


def _qdelay(p: float) -> Callable[[RunView, Sequence[str]], float | None]:
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        return percentile(v.qdelay(names), p)
    return metric


def _retrans(v: RunView, names: Sequence[str]) -> float | None:
    rows = v.last_samples(names)
    sent = sum(r.get("bytes_sent") or 0 for r in rows)
    if rows and sent > 0:
        return sum(r.get("bytes_retrans") or 0 for r in rows) / sent
    return None


def _udp_loss(v: RunView, names: Sequence[str]) -> float | None:
    vals = [f.get("loss") for f in v.selected(names) if f.get("protocol") == "udp"]
    vals = [float(x) for x in vals if x is not None]
    return sum(vals) / len(vals) if vals else None


def _fct(v: RunView, names: Sequence[str]) -> float | None:
    vals = [float(x) for f in v.selected(names) for x in (f.get("fct_s") or []) if x is not None]
    return sum(vals) / len(vals) if vals else None


def _latency(p: float) -> Callable[[RunView, Sequence[str]], float | None]:
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        return percentile(v.latencies(names), p)
    return metric


def _jain(v: RunView, names: Sequence[str]) -> float | None:
    vals = [f.get("goodput_bps") for f in v.selected(names)]
    if len(vals) < 2 or any(x is None for x in vals):
        return None
    return jain_index(vals)


def _utilisation(v: RunView, names: Sequence[str]) -> float | None:
    g = _goodput(v, names)
    _, rate = bottleneck(v.run)
    return g / rate if g is not None and rate else None


def _backlog_p95(v: RunView, names: Sequence[str]) -> float | None:
    return percentile([b for _, b in backlog_series(v.run)[1]], 95)


def _queue_count(key: str) -> Callable[[RunView, Sequence[str]], float | None]:
    """The most ``key`` (drops, marks) of any queue during the run (None: no queue says)."""
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        queues = ((v.run.result.get("summary") or {}).get("qdisc_drops") or {})
        vals = [q.get(key) for q in queues.values() if q.get(key) is not None]
        return float(max(vals)) if vals else None
    return metric


def _sojourn(p: float) -> Callable[[RunView, Sequence[str]], float | None]:
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        rows = bottleneck_samples(v.run)[1]
        ms = [r["sojourn_ms"] for r in rows if r.get("sojourn_ms") is not None]
        found = percentile(ms, p)
        return None if found is None else found / 1e3
    return metric


# ---- what the lessons prove (workloads/lessons/) ---------------------------------

def data_sockets(v: RunView, names: Sequence[str]) -> list[list[dict[str, Any]]]:
    """Per selected tcp flow, the samples of its socket that sent the most (the sender's)."""
    sockets: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in v.run.tcp_info():
        if r.get("flow") in names and r.get("state") == "ESTABLISHED":
            sockets.setdefault((r["flow"], r.get("node"), r.get("sport")), []).append(r)
    best: dict[str, list[dict[str, Any]]] = {}
    for (flow, _, _), rows in sockets.items():
        if len(rows) >= 2 and (flow not in best or _acked(rows) > _acked(best[flow])):
            best[flow] = rows
    return list(best.values())


def _acked(rows: list[dict[str, Any]]) -> float:
    return rows[-1].get("bytes_acked") or 0.0


def _handshake(v: RunView, names: Sequence[str]) -> float | None:
    """SYN to SYN-ACK of the flows' connections in the capture (mean): one RTT."""
    gaps = []
    for name in names:
        if not list((v.run.path / "raw").glob("*.pcap")):
            return None
        syns = run_time_sequence(v.run, name).syns
        if len(syns) >= 2:
            gaps.append(syns[1] - syns[0])
    return sum(gaps) / len(gaps) if gaps else None


def slow_start_growth(rows: list[dict[str, Any]]) -> float | None:
    """cwnd's growth factor per round trip before slow start ends (ssthresh first set):
    2**(slope of log2 cwnd against rounds), least squares, a round being the srtt of its
    time (it grows as the queue fills); None with under 3 samples or 2 rounds."""
    phase = []
    for r in rows:
        if r.get("ssthresh") is not None or r.get("ca_state") not in (None, "open"):
            break
        if r.get("cwnd") and r.get("srtt_us"):
            phase.append(r)
    # from the last sample at the initial window: before the first ACK nothing can grow
    first = next((i for i, r in enumerate(phase) if r["cwnd"] > phase[0]["cwnd"]), len(phase))
    phase = phase[max(first - 1, 0):]
    xs = [0.0]
    for a, b in zip(phase, phase[1:]):
        xs.append(xs[-1] + (b["t"] - a["t"]) / (b["srtt_us"] / 1e6))
    if len(phase) < 3 or xs[-1] < 2:
        return None
    ys = [math.log2(r["cwnd"]) for r in phase]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return float(2 ** slope)


def _per_socket(fn: Callable[[list[dict[str, Any]]], float | None], combine: str
                ) -> Callable[[RunView, Sequence[str]], float | None]:
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        vals = [x for x in (fn(rows) for rows in data_sockets(v, names)) if x is not None]
        if not vals:
            return None
        return sum(vals) if combine == "sum" else sum(vals) / len(vals)
    return metric


@dataclass(frozen=True)
class SocketHistory:
    """A socket's retransmissions and ca_state changes over time: from the kernel's events
    (tcp_events.csv) when the run recorded them, each one; else as far as the tcp_info
    samples saw (a state shorter than the sampling interval can be missed)."""

    retransmissions: list[float]
    ca_changes: list[tuple[float, str]]
    source: str                            # "tcp_events" or "tcp_info"


def socket_history(run: Run, rows: list[dict[str, Any]]) -> SocketHistory:
    """The history of the socket whose tcp_info samples are ``rows``."""
    key = tuple(rows[0].get(k) for k in ("src", "sport", "dst", "dport")) if rows else None
    events = [e for e in run.tcp_events()
              if tuple(e.get(k) for k in ("src", "sport", "dst", "dport")) == key]
    if events:
        retx = [e["t"] for e in events if e.get("event") == "retransmit_skb" and not e.get("err")]
        states = [(e["t"], e.get("ca_state") or "") for e in events
                  if e.get("event") == "cong_state_set"]
        return SocketHistory(retx, _changes(states), "tcp_events")
    retx, before = [], None
    for r in rows:
        n = r.get("total_retrans")
        if n is not None and before is not None and n > before:
            retx.append(r["t"])
        before = n if n is not None else before
    return SocketHistory(retx, _changes([(r["t"], r.get("ca_state") or "") for r in rows]),
                         "tcp_info")


def _changes(states: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """(time, new state) each time the state differs from the one before (open at first)."""
    out, before = [], "open"
    for t, state in states:
        if state and state != before:
            out.append((t, state))
            before = state
    return out


REDUCING_STATES = ("recovery", "cwr", "loss")    # each entry cuts cwnd (and sets ssthresh)


def state_entries(*states: str) -> Callable[[RunView, Sequence[str]], float | None]:
    """How often the flows' sending sockets entered one of ca_state ``states`` (recovery:
    fast recovery; loss: an RTO; any of REDUCING_STATES: a multiplicative decrease), from
    ``socket_history``. (Not ssthresh changes: a steady sawtooth sets the same value each
    time.)"""
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        sockets = data_sockets(v, names)
        if not sockets:
            return None
        return float(sum(1 for rows in sockets
                         for _, s in socket_history(v.run, rows).ca_changes if s in states))
    return metric


def window_ratio(v: RunView, names: Sequence[str]) -> float | None:
    """Goodput / (the peer's advertised window / RTT), medians over the sender's samples:
    about 1 when the receive window is what limits the flow."""
    g = _goodput(v, names)
    wnd = [r["snd_wnd"] for rows in data_sockets(v, names) for r in rows if r.get("snd_wnd")]
    rtt = [r["srtt_us"] / 1e6 for rows in data_sockets(v, names) for r in rows if r.get("srtt_us")]
    if g is None or not wnd or not rtt:
        return None
    return g / (percentile(wnd, 50) * 8 / percentile(rtt, 50))


def rwnd_limited(rows: list[dict[str, Any]]) -> float | None:
    """The part of the time busy sending that the receive window held the sender back."""
    last = rows[-1]
    busy = last.get("busy_time_us")
    return last.get("rwnd_limited_us", 0) / busy if busy and last.get("rwnd_limited_us") is not None \
        else None


def _events(key: str) -> Callable[[RunView, Sequence[str]], float | None]:
    """The sum of a kernel TCP event count (result.json ``flows[].tcp_events``) over the
    selected flows; None where no selected flow has them (not recorded in that run)."""
    def metric(v: RunView, names: Sequence[str]) -> float | None:
        counts = [f["tcp_events"].get(key) for f in v.selected(names)
                  if isinstance(f.get("tcp_events"), dict)]
        counts = [c for c in counts if isinstance(c, (int, float))]
        return float(sum(counts)) if counts else None
    return metric


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str            # bps, s, fraction, ratio, bytes, count
    better: str          # "higher", "lower" or ""
    help: str
    fn: Callable[[RunView, Sequence[str]], float | None]
    per_flow: bool = True  # False: a property of the run (the bottleneck), not of flows


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("goodput", "bps", "higher", "sum of the flows' goodput", _goodput),
    Metric("share", "fraction", "", "the flows' part of the run's total goodput", _share),
    Metric("rtt_p50", "s", "lower", "median smoothed RTT (tcp_info)", _rtt(50)),
    Metric("rtt_p95", "s", "lower", "95th percentile smoothed RTT", _rtt(95)),
    Metric("rtt_p99", "s", "lower", "99th percentile smoothed RTT", _rtt(99)),
    Metric("qdelay_p50", "s", "lower", "median queueing delay (srtt - min_rtt)", _qdelay(50)),
    Metric("qdelay_p95", "s", "lower", "95th percentile queueing delay", _qdelay(95)),
    Metric("retrans", "fraction", "lower", "bytes retransmitted / bytes sent", _retrans),
    Metric("udp_loss", "fraction", "lower", "UDP loss reported by the receiver", _udp_loss),
    Metric("fct", "duration", "lower", "mean flow (connection) completion time", _fct),
    Metric("latency_p50", "s", "lower", "median request/response latency (rr flows)",
           _latency(50)),
    Metric("latency_p99", "s", "lower", "99th percentile request/response latency", _latency(99)),
    Metric("jain", "ratio", "higher", "Jain's fairness index of goodput across the flows", _jain),
    Metric("utilisation", "fraction", "higher", "goodput / bottleneck rate", _utilisation),
    Metric("backlog_p95", "bytes", "lower", "95th percentile bottleneck queue backlog",
           _backlog_p95, per_flow=False),
    Metric("drops", "count", "lower", "drops at the bottleneck queue (the most of any qdisc "
           "or link engine queue)", _queue_count("drops"), per_flow=False),
    Metric("marks", "count", "", "ECN CE marks at the bottleneck queue (the most of any "
           "queue that counts them)", _queue_count("marks"), per_flow=False),
    Metric("sojourn_p50", "s", "lower", "median sojourn time in the bottleneck queue "
           "(sampled; queues that report it)", _sojourn(50), per_flow=False),
    Metric("sojourn_p95", "s", "lower", "95th percentile sojourn time in the bottleneck queue",
           _sojourn(95), per_flow=False),
    Metric("handshake", "s", "", "SYN to SYN-ACK in the capture (one RTT)", _handshake),
    Metric("ss_growth", "ratio", "", "cwnd growth per RTT in slow start (2: doubling)",
           _per_socket(slow_start_growth, "mean")),
    Metric("cwnd_cuts", "count", "", "multiplicative decreases (entries into recovery, cwr "
           "or loss)", state_entries(*REDUCING_STATES)),
    Metric("recoveries", "count", "", "entries into fast recovery (ca_state recovery)",
           state_entries("recovery")),
    Metric("rtos", "count", "lower", "retransmission timeouts (entries into ca_state loss)",
           state_entries("loss")),
    Metric("window_ratio", "ratio", "", "goodput / (receive window / RTT): 1 when "
           "receiver-limited", window_ratio),
    Metric("rwnd_limited", "fraction", "", "time the receive window limited the sender",
           _per_socket(rwnd_limited, "mean")),
    Metric("retransmissions", "count", "lower",
           "segments retransmitted (kernel tcp_retransmit_skb events)", _events("retransmissions")),
    Metric("fast_recoveries", "count", "lower",
           "entries into fast recovery (kernel tcp_cong_state_set events)",
           _events("fast_recoveries")),
    Metric("loss_episodes", "count", "lower",
           "entries into the loss state after a retransmission timeout", _events("loss_episodes")),
)}

DEFAULT_COLUMNS = ("goodput", "rtt_p50", "rtt_p95", "rtt_p99", "qdelay_p50", "retrans", "udp_loss",
                   "fct", "latency_p50", "latency_p99", "jain", "utilisation",
                   # the bottleneck queue: drops where queues were sampled, marks and sojourn
                   # where a queue reports them (the link engine's)
                   "drops", "marks", "sojourn_p50")


def fmt_value(value: float | None, unit: str) -> str:
    """A value for people: Mbit/s, ms, %, KB."""
    if value is None:
        return "-"
    if unit == "bps":
        return f"{value / 1e6:.2f}"
    if unit == "s":
        return f"{value * 1e3:.1f}"
    if unit == "duration":
        return f"{value:.2f}"
    if unit == "fraction":
        return f"{value * 100:.2f}"
    if unit == "bytes":
        return f"{value / 1e3:.1f}"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:g}"


UNIT_LABEL = {"bps": "Mbit/s", "s": "ms", "duration": "s", "fraction": "%", "bytes": "KB", "ratio": "", "count": ""}
