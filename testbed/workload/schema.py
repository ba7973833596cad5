"""The JSON Schema of a workload file (``testbed schema --workload``), for editors and as
the reference of every key. Its keys are the loader's (a unit test keeps them equal)."""

from __future__ import annotations

from typing import Any

from testbed.model.schema import SCHEDULE

NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"}
DURATION = {"type": "string", "description": "e.g. 10s, 500ms"}
SIZE = {"type": ["string", "integer"], "description": "bytes: 1500B, 64KB, 1MiB"}
RATE = {"type": "string", "description": "100mbit (bits/s); 5mbps is megaBYTES/s, as in tc"}

FLOW = {
    "type": "object", "additionalProperties": False, "required": ["from", "to"],
    "properties": {
        "name": {**NAME, "description": "default: from-to-index"},
        "from": {"type": "string", "description": "the sending node"},
        "to": {"type": "string", "description": "the receiving node"},
        "protocol": {"enum": ["tcp", "udp"]},
        "cc": {"type": "string", "description": "congestion control (tcp): cubic, bbr, reno..."},
        "start": {**DURATION, "description": "when it starts after the run's t0 (0s)"},
        "duration": {**DURATION, "description": "how long it sends (default: the workload's)"},
        "size": {**SIZE, "description": "send this much, then stop (not with duration)"},
        "count": {"type": "integer", "minimum": 1, "description": "parallel connections"},
        "rate": {**RATE, "description": "udp: the sending rate; tcp: a cap (iperf3 -b)"},
        "packet_size": {**SIZE, "description": "udp payload per datagram (1200B)"},
        "rr": {"type": "object", "additionalProperties": False,
               "required": ["request", "response"],
               "description": "request/response traffic instead of bulk",
               "properties": {"request": SIZE, "response": SIZE, "think": DURATION}},
        "driver": {"enum": ["iperf3", "builtin"]},
        "rcvbuf": {**SIZE, "description": "the receiver's SO_RCVBUF: caps its window (tcp)"},
        "sndbuf": {**SIZE, "description": "the sender's SO_SNDBUF (tcp)"},
    },
}


def workload_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "testbed workload",
        "type": "object", "additionalProperties": False,
        "required": ["topology", "flows"],
        "properties": {
            "name": NAME,
            "description": {"type": "string"},
            "topology": {"oneOf": [{"type": "string", "description": "path, relative to the "
                                    "workload file"}, {"type": "object"}]},
            "matrix": {"type": "object", "description": "variable: [values]; each key must be "
                       "read by the workload's or the topology's template",
                       "additionalProperties": {"type": "array", "minItems": 1}},
            "repeat": {"type": "integer", "minimum": 1},
            "seed": {"type": "integer"},
            "duration": DURATION,
            "sampling": {"type": "object", "additionalProperties": False,
                         "properties": {k: DURATION for k in ("tcp_info", "qdisc", "host")}},
            "capture": {"type": "object", "additionalProperties": False, "properties": {
                "enabled": {"type": "boolean"},
                "interfaces": {"oneOf": [{"type": "string"},
                                         {"type": "array", "items": {"type": "string"}}]},
                "snaplen": {"type": "integer", "minimum": 64}}},
            "flows": {"type": "array", "minItems": 1, "items": FLOW},
            "schedule": SCHEDULE,
        },
    }
