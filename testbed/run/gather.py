"""After a run: read what its collectors and drivers left (total readers: they
return what they could read and what they lost), write the run's tables
(tcp_info.csv, tcp_events.csv, qdisc.csv, host.csv, pcap_rtt.csv) and build result.json's
flows and summary, with every loss recorded and the run marked suspect."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.collect import capture as cap
from testbed.collect import hostload, qdisc, tcpevents_parse, tcpinfo
from testbed.results import jain_index, write_table
from testbed.run.collectors import Collectors
from testbed.run.flows import Plans
from testbed.run.summary import event_counts, flow_summary, qdisc_drops


@dataclass
class Gathered:
    flows: list[dict[str, Any]]
    summary: dict[str, Any]
    manifest: dict[str, Any]          # what the manifest adds: cc_in_use, collectors


def _tcp_info_rows(col: Collectors, t0: float) -> tuple[list[dict[str, Any]], list[str]]:
    if col.sampler is None or not col.sampler.spool.exists():
        return [], []
    return tcpinfo.decode_spool(col.sampler.spool.read_bytes(), col.sampler.labels, t0)


def _pcap_flows(col: Collectors, losses: list[str]) -> dict[str, dict[str, Any]]:
    found_all: dict[str, dict[str, Any]] = {}
    for _, pcap, label in col.captures:
        found, lost = cap.read_capture(pcap)
        losses += [f"capture {label}: {x}" for x in lost]
        for k, v in found.items():
            v["capture"] = label
            found_all.setdefault(k, v)
    return found_all


def sampled_sockets(rows: list[dict[str, Any]], plans: Plans) -> dict[str, set[tuple[Any, ...]]]:
    """Each flow's sockets (src, sport, dst, dport) as the tcp_info sampler saw them in
    this run's namespaces: those on the flow's port, at either end."""
    out: dict[str, set[tuple[Any, ...]]] = {}
    for plan, _ in plans:
        found = {(r.get("src"), r.get("sport"), r.get("dst"), r.get("dport")) for r in rows
                 if plan.port in (r.get("dport"), r.get("sport"))}
        if found:
            out[plan.flow.name] = found
    return out


def _tcp_events(run_dir: Path, plans: Plans, col: Collectors, t0: float,
                losses: list[str], tcp_info_rows: list[dict[str, Any]]
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """result.json's ``tcp_events`` and the per-socket counts; tcp_events.csv on the run's
    clock (t0, as tcp_info.csv). What the kernel or the decoder lost goes to ``losses``."""
    if col.events is None or col.events_stats is None:
        return col.events_off or {"available": False, "why": ["not started"]}, []
    decoded, counts = tcpevents_parse.export(col.events.spool, run_dir / "tcp_events.csv", t0,
                                             {p.port: p.flow.name for p, _ in plans},
                                             sampled_sockets(tcp_info_rows, plans))
    stats = col.events_stats
    fields = tcpevents_parse.result_fields(stats, decoded, counts, col.events.missing)
    dropped = stats.total("overrun") + stats.total("dropped")
    if dropped:
        losses.append(f"tcp events: the kernel dropped {dropped} events (buffer "
                      f"{stats.buffer_kb} KB per CPU full)")
    if decoded.lost or decoded.lost_unknown:
        losses.append(f"tcp events: the ring buffer's pages say {decoded.lost} events were "
                      f"lost ({decoded.lost_unknown} pages lost an unknown number)")
    losses += [f"tcp events: {x}" for x in decoded.problems]
    return {"available": True, **fields}, counts


def _write_tables(run_dir: Path, col: Collectors, flows: list[dict[str, Any]],
                  ts_rows: list[dict[str, Any]], t0_epoch: float) -> None:
    write_table(ts_rows, ("flow",) + tcpinfo.CSV_COLUMNS, run_dir / "tcp_info.csv")
    if col.qs is not None:
        write_table(col.qs.rows, qdisc.CSV_COLUMNS, run_dir / "qdisc.csv")
    rows = col.hs.rows
    write_table(rows, tuple(rows[0].keys()) if rows else ("t", "cpu_max", "cpu_mean", "load1"),
                run_dir / "host.csv")
    rtt_rows = [{"flow": f["name"], "t": round(t - t0_epoch, 6), "rtt_ms": r}
                for f in flows for t, r in f.pop("_pcap_rtt_series", [])]
    if rtt_rows:
        write_table(rtt_rows, ("flow", "t", "rtt_ms"), run_dir / "pcap_rtt.csv")


def _verdict(col: Collectors, losses: list[str]) -> tuple[bool, list[str]]:
    suspect, reasons = hostload.verdict(col.hs.rows)
    if col.stats is not None and col.stats.missed_fraction > 0.05:
        suspect = True
        reasons.append(f"tcp_info sampler missed {col.stats.missed_fraction:.1%} of its intervals")
    losses += [f"capture {label}: {c['lost']}" for label, c in col.cap_stats.items() if c["lost"]]
    losses += (col.qs.losses() if col.qs is not None else []) + col.hs.losses()
    engine = col.qs.engine_stats() if col.qs is not None else None
    if engine and engine["lost"] > 0.05 * engine["samples"]:
        suspect = True
        reasons.append(f"the link engine did not answer {engine['lost']} of "
                       f"{engine['samples']} samples of its queues in time")
    if losses:
        suspect = True
        reasons += [f"data lost: {x}" for x in losses]
    return suspect, reasons


def gather(run_dir: Path, plans: Plans, col: Collectors, t0: float,
           flow_failures: dict[str, str], notes: list[str], t0_epoch: float | None = None
           ) -> Gathered:
    """The run's flows and summary from what ``col`` and the drivers left in ``run_dir``.
    ``t0_epoch``: t0 on the wall clock (the manifest's ``clock``), for capture times."""
    if t0_epoch is None:
        t0_epoch = time.time() - (time.monotonic() - t0)
    rows, losses = _tcp_info_rows(col, t0)   # losses: what a collector could not read
    pcap_flows = _pcap_flows(col, losses)
    flows: list[dict[str, Any]] = []
    ts_rows: list[dict[str, Any]] = []
    events, counts = _tcp_events(run_dir, plans, col, t0, losses, rows)
    for plan, driver in plans:
        flows.append(flow_summary(plan, driver.parse(plan), rows, pcap_flows, ts_rows,
                                  flow_failures.get(plan.flow.name)))
        if events["available"] and plan.flow.protocol == "tcp":
            flows[-1]["tcp_events"] = event_counts(plan, counts)
    _write_tables(run_dir, col, flows, ts_rows, t0_epoch)
    suspect, reasons = _verdict(col, losses)
    goodputs = [f["goodput_bps"] for f in flows]
    stats = col.stats.as_dict() if col.stats else None
    summary = {
        "flows": len(flows), "ok": all(f["ok"] for f in flows),
        "goodput_bps_total": sum(goodputs), "jain_fairness": jain_index(goodputs),
        "retransmits_total": sum(f["retransmits"] or 0 for f in flows),
        "suspect": suspect, "suspect_reasons": reasons, "notes": notes,
        "data_loss": losses,
        "tcp_info_sampler": stats,
        "captures": col.cap_stats,   # per capture: captured, received by filter, dropped, lost
        "qdisc_drops": qdisc_drops(col.qs.rows if col.qs is not None else []),
        # samples of the link engine's queues asked for, and lost (not answered in time)
        "engine_queue_samples": col.qs.engine_stats() if col.qs is not None else None,
        "tcp_events": events,
    }
    qdisc_error = str(col.qs.error) if col.qs and col.qs.error else None
    return Gathered(flows, summary, {
        "cc_in_use": {f["name"]: f["cc"] for f in flows},
        "collectors": {"tcp_info": stats, "capture": col.cap_stats, "qdisc_error": qdisc_error,
                       "tcp_events": events.get("trace") if events["available"] else events}})
