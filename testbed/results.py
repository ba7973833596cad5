"""Run directories and what goes in them.

A run directory ``results/<workload>/<timestamp>-<id>/`` holds raw artefacts
(driver JSON, pcap, tcp_info spool), time series (CSV; Parquet too when
pyarrow is importable), ``manifest.json`` (what the run ran on) and
``result.json`` (what happened, versioned by ``SCHEMA_VERSION``). Reports
read only these files.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import secrets
from pathlib import Path
from typing import Any, Iterable, Sequence

from testbed.shape import ListOf, Obj, Opt, describe, parse_json
from testbed.files import contained, write_atomic

SCHEMA_VERSION = 1
STATUSES = ("complete", "partial", "failed", "interrupted")
# columns of tcp_info.csv (after "flow") and qdisc.csv
TCPINFO_COLUMNS = ("t", "node", "src", "sport", "dst", "dport", "state", "ca_state", "cc",
                   "cwnd", "ssthresh", "srtt_us", "rttvar_us", "min_rtt_us", "rto_us", "mss",
                   "delivery_rate_bps", "pacing_rate_bps", "bytes_acked", "bytes_sent",
                   "bytes_retrans", "total_retrans", "lost", "retransmits", "unacked", "delivered",
                   "app_limited", "bbr_bw_bps", "bbr_min_rtt_us", "bbr_pacing_gain", "bbr_cwnd_gain",
                   # flow control and where the time went: the peer's window (snd_wnd) and
                   # ours (rcv_wnd, Linux 6.2+), microseconds limited by the receive window
                   # or the send buffer out of busy_time, ECN-marked deliveries, reordering
                   "snd_wnd", "rcv_wnd", "rwnd_limited_us", "sndbuf_limited_us", "busy_time_us",
                   "delivered_ce", "reordering")
# qdisc.csv has one row per sample of each queue of an emulated link's ends: the kernel's
# qdiscs and, where the link engine is the bottleneck (userspace backend, an aqm), the
# engine's queue as kind "engine:<aqm>" at its direction's sender egress (node, ifname),
# where the kernel's would be. An engine row has no bytes; drops are tail + AQM drops,
# aqm_drops the discipline's, marks its CE marks, sojourn_ms how long a packet arriving
# at t waits in the queue. Those three are empty for the kernel's qdiscs.
QDISC_COLUMNS = ("t", "node", "ifname", "kind", "handle", "parent", "bytes", "packets", "drops",
                 "overlimits", "requeues", "backlog", "qlen", "marks", "aqm_drops", "sojourn_ms")
ENGINE_QUEUE_KIND = "engine:"     # the prefix of the kind of the link engine's queues
# columns of tcp_events.csv (after "flow"): one row per kernel TCP event
TCP_EVENTS_COLUMNS = ("t", "event", "src", "sport", "dst", "dport", "cookie", "cwnd", "ssthresh",
                      "srtt_us", "snd_wnd", "rcv_wnd", "snd_nxt", "snd_una", "data_len",
                      "ca_state", "tcp_state", "err", "rcvbuf", "rcv_ssthresh", "window_clamp",
                      "rcv_space", "rtt_us", "reason", "cpu")


def make_run_dir(workload: str, output: Path | None = None) -> Path:
    """A fresh ``<output or results>/<workload>/<UTC timestamp>-<id>/`` directory; the
    workload's name must be a plain name that keeps it inside the output directory."""
    base = Path(output) if output is not None else Path("results")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    workload_dir = contained(base, workload, what="workload name")
    run_dir = contained(workload_dir, f"{stamp}-{secrets.token_hex(3)}", what="run id")
    run_dir.mkdir(parents=True, exist_ok=False)
    (run_dir / "raw").mkdir()
    return run_dir


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (None when empty): every percentile of testbed."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def percentiles(values: Sequence[float], points: Iterable[int] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles as ``{"p50": ..}`` plus min, max, mean (None when empty)."""
    keys = [f"p{p}" for p in points]
    if not values:
        return {k: None for k in ["min", *keys, "max", "mean"]}
    s = sorted(values)
    out: dict[str, float | None] = {"min": s[0]}
    for p, k in zip(points, keys):
        out[k] = percentile(s, p)
    out["max"] = s[-1]
    out["mean"] = sum(s) / len(s)
    return out


def jain_index(values: Sequence[float]) -> float | None:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    vals = [v for v in values if v is not None]
    if not vals or not any(vals):
        return None
    return sum(vals) ** 2 / (len(vals) * sum(v * v for v in vals))


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_table(rows: list[dict[str, Any]], columns: Sequence[str], path: Path) -> list[Path]:
    """``path`` (.csv) and, if pyarrow is importable, a .parquet beside it."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    written = [path]
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pyarrow.table({c: [r.get(c) for r in rows] for c in columns})
    pq.write_table(table, path.with_suffix(".parquet"))
    written.append(path.with_suffix(".parquet"))
    return written


def load_result(run_dir: Path) -> dict[str, Any]:
    """A run's result.json, refusing versions this code does not know."""
    data = json.loads((Path(run_dir) / "result.json").read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{run_dir}: result schema {data.get('schema_version')}, "
                         f"this testbed reads {SCHEMA_VERSION}")
    return data


# Raw artefacts: drivers' output files in raw/ (read by traffic/ and by analysis/)

def read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The last JSON object in a tool's output file (and an explanation if there is none)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, f"{path.name} was not written"
    return parse_output(data, path.name)


def parse_output(data: bytes, name: str) -> tuple[dict[str, Any] | None, str]:
    """The JSON object in a tool's output (whole, or its last line: the agent writes a
    readiness line first), or None and why there is none. Pure, total: bytes that are not
    UTF-8, not JSON or not an object are a reason, never an exception."""
    data = data.strip()
    if not data:
        return None, f"{name} is empty (the process produced no output)"
    value, why = parse_json(data)
    if why is not None:
        last, why_last = parse_json(data.rsplit(b"\n", 1)[-1])
        if why_last is not None:
            return None, f"{name} is {why}: {data[:200]!r}"
        value = last
    if not isinstance(value, dict):
        return None, f"{name} holds {describe(value)}, not a JSON object"
    return value, ""


# what parse_builtin reads of the agent's output (testbed.traffic.agent), with its types
AGENT_CLIENT = Obj({
    "error": object, "errors": ListOf(object), "seconds": Opt(float),
    "streams": ListOf(Obj({"stream": int, "sent": int}, ("stream", "sent"))),
    "connections": ListOf(Opt(Obj({
        "local_host": str, "local_port": int, "cc": str, "start_ns": float, "end_ns": float,
        "bytes": float, "error": object, "transactions": int, "latencies_us": ListOf(float)}))),
})
_UDP_COUNTS = ("stream", "received", "reordered", "duplicates", "bytes")
AGENT_SERVER = Obj({
    "error": object,
    "streams": ListOf(Obj({**{k: int for k in _UDP_COUNTS}, "jitter_us": float,
                           "owd_us": ListOf(float)}, _UDP_COUNTS + ("jitter_us",))),
    "connections": ListOf(Obj({"remote_port": int, "bytes": float, "error": object})),
})
