"""Synthetic run directories with known answers, for tests and demos.

``write_run`` lays out what ``testbed run`` writes (result.json,
manifest.json, tcp_info.csv, qdisc.csv) from a few numbers: each flow sends
at a constant goodput with a constant RTT above a base RTT, so every metric
has a value that can be computed by hand. ``pcap_bytes`` writes a capture of
given TCP packets.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from testbed.pcapfile import TcpPacket
from testbed.results import SCHEMA_VERSION, write_table
from testbed.results import QDISC_COLUMNS, TCPINFO_COLUMNS
from testbed.version import __version__


@dataclass(frozen=True)
class FakeFlow:
    name: str
    cc: str
    goodput_bps: float
    rtt_ms: float = 40.0          # constant srtt
    min_rtt_ms: float = 40.0
    retrans_fraction: float = 0.0
    seconds: float = 10.0
    protocol: str = "tcp"
    udp_loss: float | None = None
    latencies_ms: tuple[float, ...] = ()   # request/response: makes it an rr flow


def write_run(base: Path, name: str, *, workload: str = "synthetic", variables: dict[str, Any],
              flows: Sequence[FakeFlow], rate_bps: float = 100e6, suspect: bool = False,
              status: str = "complete", schema_version: int = SCHEMA_VERSION,
              repetition: int = 0, samples: int = 100, backlog_bytes: float = 10000.0) -> Path:
    """One run directory ``base/name`` with the given flows; returns its path."""
    run = Path(base) / name
    (run / "raw").mkdir(parents=True, exist_ok=True)
    flows_out, ts_rows = [], []
    for i, f in enumerate(flows):
        sent = f.goodput_bps * f.seconds / 8
        retrans = sent * f.retrans_fraction
        for k in range(samples):
            t = f.seconds * (k + 1) / samples
            acked = sent * (k + 1) / samples
            ts_rows.append({"flow": f.name, "t": round(t, 6), "node": f"h{i + 1}", "src": f"10.0.0.{i + 1}",
                            "sport": 40000 + i, "dst": "10.0.1.1", "dport": 5201 + i,
                            "state": "ESTABLISHED", "ca_state": "open", "cc": f.cc,
                            "cwnd": 10 + k, "srtt_us": int(f.rtt_ms * 1000),
                            "min_rtt_us": int(f.min_rtt_ms * 1000), "mss": 1448,
                            "bytes_acked": int(acked), "bytes_sent": int(acked + retrans * (k + 1) / samples),
                            "bytes_retrans": int(retrans * (k + 1) / samples),
                            "delivery_rate_bps": int(f.goodput_bps)})
        out: dict[str, Any] = {
            "name": f.name, "from": f"h{i + 1}", "to": "h9", "protocol": f.protocol, "kind": "bulk",
            "driver": "synthetic", "count": 1, "port": 5201 + i, "ok": True, "error": None,
            "cc_requested": f.cc, "cc": f.cc, "cc_source": "tcp_info", "start_s": 0.0,
            "planned_duration_s": f.seconds, "bytes": int(sent), "seconds": f.seconds,
            "goodput_bps": f.goodput_bps, "retransmits": 0, "fct_s": [f.seconds],
            "rtt_ms": {"srtt": {"p50": f.rtt_ms}, "min_rtt": f.min_rtt_ms}, "connections": []}
        if f.protocol == "udp":
            out["loss"] = f.udp_loss
        if f.latencies_ms:
            out["kind"] = "rr"
            (run / "raw" / f"{f.name}.client.json").write_text(json.dumps(
                {"role": "client", "errors": [], "connections": [
                    {"latencies_us": [x * 1e3 for x in f.latencies_ms],
                     "transactions": len(f.latencies_ms)}]}))
        flows_out.append(out)
    write_table(ts_rows, ("flow",) + TCPINFO_COLUMNS, run / "tcp_info.csv")
    q_rows = [{"t": round(k * 0.1, 3), "node": "r1", "ifname": "eth2", "kind": "tbf", "handle": "1:",
               "parent": "ffff:ffff", "bytes": int(k * 1000), "packets": k, "drops": 0, "overlimits": 0,
               "requeues": 0, "backlog": backlog_bytes, "qlen": 1} for k in range(samples)]
    write_table(q_rows, QDISC_COLUMNS, run / "qdisc.csv")
    tbf = {"kind": "tbf", "dev": "eth2", "options": {"rate": rate_bps / 8}, "bytes": 0}
    manifest = {"schema_version": schema_version,
                "kernel": {"release": "6.0-synthetic"}, "tools": {"testbed": __version__},
                "testbed": {"instance": "synthetic", "link_backend": "userspace", "attached": False},
                "workload": {"name": workload, "variables": variables},
                "nodes_before": {"r1": {"qdiscs": [tbf]}},
                "nodes_after": {"r1": {"qdiscs": [{**tbf, "bytes": 10 ** 9}]}}}
    result = {"schema_version": schema_version, "workload": workload, "run_id": name, "status": status,
              "partial": status != "complete", "error": None, "suspect": suspect,
              "suspect_reasons": ["host CPU saturated"] if suspect else [], "point": variables,
              "repetition": repetition, "variables": variables, "started": 0.0, "finished": 10.0,
              "flows": flows_out, "summary": {"flows": len(flows_out), "qdisc_drops": {}}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    (run / "result.json").write_text(json.dumps(result))
    return run


def pcap_bytes(packets: Sequence[TcpPacket]) -> bytes:
    """A pcap file (Ethernet, microseconds) holding ``packets`` as IPv4 TCP, with their
    window scale and SACK options and ``payload`` bytes cut by a 128-byte snaplen."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 128, 1)]
    for p in packets:
        opts = b""
        if p.wscale is not None:
            opts += bytes([1, 3, 3, p.wscale])
        if p.sack:
            opts += bytes([1, 1, 5, 2 + 8 * len(p.sack)]) + b"".join(
                struct.pack(">II", a, b) for a, b in p.sack)
        tcp = struct.pack(">HHIIHH", p.sport, p.dport, p.seq, p.ack,
                          ((20 + len(opts)) // 4) << 12 | p.flags, p.window) + b"\0\0\0\0" + opts
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + p.payload, 0, 0, 64, 6, 0,
                         bytes(map(int, p.src.split("."))), bytes(map(int, p.dst.split("."))))
        frame = (b"\0" * 12 + b"\x08\x00" + ip + tcp + b"\0" * p.payload)[:128]
        sec = int(p.t)
        out.append(struct.pack("<IIII", sec, round((p.t - sec) * 1e6), len(frame),
                               14 + 20 + len(tcp) + p.payload) + frame)
    return b"".join(out)
