"""A run's summaries, from what its collectors and drivers gathered: each
flow's entry in result.json (goodput, the congestion control its sockets
really used, RTT percentiles from tcp_info and from the capture, kernel TCP
event counts) and the qdisc drops per interface. Pure: no processes, no kernel."""

from __future__ import annotations

from typing import Any

from testbed.results import percentiles
from testbed.traffic import FlowPlan, FlowResult


def qdisc_drops(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per queue (rows of the qdisc sampler: the kernel's qdiscs and the link engine's
    queues): packets dropped and CE-marked during the run, largest backlog, largest
    sojourn sampled (marks, aqm_drops and sojourn None where the queue does not say)."""
    by_queue: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by_queue.setdefault((r["node"], r["ifname"], r["kind"], r["handle"]), []).append(r)
    return {f"{node}:{ifname} {kind} {handle}".rstrip(): _queue_summary(samples)
            for (node, ifname, kind, handle), samples in by_queue.items()}


def _queue_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = samples[0], samples[-1]

    def during(key: str) -> int | None:
        if last.get(key) is None:
            return None
        return last[key] - (first.get(key) or 0)
    sojourns = [r["sojourn_ms"] for r in samples if r.get("sojourn_ms") is not None]
    return {"drops": during("drops") or 0, "marks": during("marks"),
            "aqm_drops": during("aqm_drops"),
            "backlog_max": max(r["backlog"] or 0 for r in samples),
            "sojourn_ms_max": max(sojourns) if sojourns else None}


EVENT_COUNTS = ("retransmissions", "fast_recoveries", "loss_episodes", "rtos")


def event_counts(plan: FlowPlan, event_flows: list[dict[str, Any]]) -> dict[str, Any]:
    """A flow's kernel TCP event counts (``tcpevents_parse.FlowCounter``), summed over its
    sending sockets (from its source address to its port: retransmissions and congestion
    states happen on the sender), not another namespace's on the same port (``flow``
    unset: ``tcpevents_parse.export``)."""
    mine = [f for f in event_flows if f.get("src") == plan.src_ip and f.get("dport") == plan.port
            and f.get("flow", plan.flow.name) == plan.flow.name]
    out: dict[str, Any] = {k: sum(f.get(k) or 0 for f in mine) for k in EVENT_COUNTS}
    out["sockets"] = len(mine)
    out["events"] = sum(sum((f.get("events") or {}).values()) for f in mine)
    return out


def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _cc_in_use(mine: list[dict[str, Any]], last_by_port: dict[int, dict[str, Any]],
               res: FlowResult) -> tuple[list[str], dict[str, Any]]:
    """The congestion controls a flow's sockets used, and its result.json fields: read back
    from tcp_info (sock_diag), else the driver's report. The cc each socket ran with is its
    last sample's: iperf3 sets TCP_CONGESTION only after connecting, so a socket's first
    samples show the host default (``cc_at_connect``)."""
    cc_seen = sorted({r["cc"] for r in last_by_port.values() if r.get("cc")})
    cc_before = sorted({r["cc"] for r in mine if r.get("cc")} - set(cc_seen))
    cc_reported = sorted({c.get("cc") for c in res.connections if c.get("cc")})
    return cc_seen, {
        "cc": _one_or_list(cc_seen) if cc_seen else
              (_one_or_list(cc_reported) if cc_reported else None),
        "cc_source": "tcp_info" if cc_seen else ("driver" if cc_reported else None),
        "cc_at_connect": cc_before or None}


def flow_summary(plan: FlowPlan, res: FlowResult, rows: list[dict[str, Any]],
                 pcap_flows: dict[str, dict[str, Any]], ts_rows: list[dict[str, Any]],
                 failure: str | None = None) -> dict[str, Any]:
    """One flow's entry in result.json from its driver's result, its tcp_info samples
    (``rows``: all of the run's; this flow's are appended to ``ts_rows``) and capture
    analysis. ``failure``: why the run failed the flow (e.g. its server died), if it did."""
    flow = plan.flow
    ports = set(res.local_ports)
    mine = [r for r in rows if r["node"] == flow.src and r["dport"] == plan.port
            and r["dst"] == plan.dst_ip and (not ports or r["sport"] in ports)]
    for r in mine:
        ts_rows.append({"flow": flow.name, **r})
    last_by_port: dict[int, dict[str, Any]] = {}
    for r in mine:
        last_by_port[r["sport"]] = r
    cc_seen, cc = _cc_in_use(mine, last_by_port, res)
    srtt = [r["srtt_us"] / 1000.0 for r in mine if r.get("srtt_us")]
    min_rtt = [r["min_rtt_us"] / 1000.0 for r in mine if r.get("min_rtt_us")]
    pc = [v for v in pcap_flows.values() if v["src"] == plan.src_ip and v["dst"] == plan.dst_ip
          and v["dport"] == plan.port and (not ports or v["sport"] in ports)]
    pcap_rtt = sorted(r for v in pc for _, r in v["rtt_series"])
    retrans_tcpinfo = sum(r.get("total_retrans") or 0 for r in last_by_port.values()) if last_by_port else None
    out: dict[str, Any] = {
        "name": flow.name, "from": flow.src, "to": flow.dst, "protocol": flow.protocol,
        "kind": flow.kind, "driver": res.driver, "count": flow.count, "port": plan.port,
        "ok": res.ok, "error": res.error,
        "cc_requested": flow.cc, **cc,
        "start_s": flow.start.seconds, "planned_duration_s": None if flow.size else plan.seconds,
        # a flow's size is per connection (each of its count connections sends it)
        "size_bytes": flow.size.bytes if flow.size else None,
        "size_bytes_total": flow.size.bytes * flow.count if flow.size else None,
        "bytes": res.bytes, "seconds": res.seconds, "goodput_bps": res.goodput_bps,
        "retransmits": res.retransmits if res.retransmits is not None else retrans_tcpinfo,
        "retransmits_tcp_info": retrans_tcpinfo,
        # per connection that delivered its whole size (drivers give None otherwise)
        "fct_s": [c.get("fct_s") for c in res.connections if c.get("fct_s") is not None],
        "rtt_ms": {"srtt": percentiles(srtt), "min_rtt": min(min_rtt) if min_rtt else None,
                   "pcap": percentiles(pcap_rtt),
                   # a capture sees data leave and its ACK return at one point of the path:
                   # its RTT is the round trip beyond that point, not the end-to-end one
                   "pcap_from": sorted({v.get("capture") for v in pc if v.get("capture")})},
        "tcp_info_samples": len(mine),
        "connections": res.connections,
        "pcap": [{k: v for k, v in p.items() if k != "rtt_series"} for p in pc],
        "_pcap_rtt_series": [(t, r) for v in pc for t, r in v["rtt_series"]],
    }
    if failure is not None:
        out["ok"] = False
        out["error"] = failure + (f" ({res.error})" if res.error else "")
    if flow.cc and cc_seen and cc_seen != [flow.cc]:
        out["ok"] = False
        out["error"] = f"asked for cc {flow.cc} but the sockets used {', '.join(cc_seen)}"
    if res.latency_us:
        out["latency_ms"] = percentiles([x / 1000.0 for x in res.latency_us])
        out["transactions"] = len(res.latency_us)
    if flow.protocol == "udp":
        out["udp"] = {**res.udp, "owd_ms": percentiles([x / 1000.0 for x in res.owd_us])}
        out["loss"] = res.udp.get("loss")
    return out
