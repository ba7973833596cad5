"""The JSON Schema of a topology file (``testbed schema``), for editors."""

from __future__ import annotations

from typing import Any

from testbed.model.impairment import AQM_KINDS, IMPAIRMENT_KEYS

NAME = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]*$", "maxLength": 24}
PERCENT = {"type": ["string", "number"], "description": "a percentage, e.g. '0.5%'"}
AQM_KIND = {"enum": list(AQM_KINDS), "description": "the bottleneck queue's discipline"}
IMPAIRMENT_PROPS: dict[str, Any] = {
    "rate": {"type": "string", "description": "bottleneck rate, e.g. 100mbit"},
    "delay": {"type": "string", "description": "one-way delay, e.g. 20ms"},
    "jitter": {"type": "string", "description": "delay variation, e.g. 2ms"},
    "distribution": {"enum": ["uniform", "normal", "pareto", "paretonormal"]},
    "loss": {"oneOf": [PERCENT, {
        "type": "object", "additionalProperties": False, "required": ["p", "r"],
        "description": "Gilbert-Elliott loss model",
        "properties": {k: PERCENT for k in ("p", "r", "h", "k")}}]},
    "queue": {"type": ["string", "integer"],
              "description": "buffer: packets (100p), bytes (375KB) or a BDP multiple (1.5bdp)"},
    "reorder": PERCENT, "duplicate": PERCENT, "corrupt": PERCENT,
    "aqm": {"oneOf": [AQM_KIND, {
        "type": "object", "additionalProperties": False, "required": ["kind"],
        "description": "queue discipline with parameters (the kernel's defaults otherwise)",
        "properties": {"kind": AQM_KIND, "target": {"type": "string"},
                       "interval": {"type": "string"},
                       "limit": {"type": ["string", "integer"]}}}]},
    "ecn": {"type": "boolean", "description": "the AQM marks ECT packets CE instead of dropping"},
}
IMPAIRMENT = {"type": "object", "additionalProperties": False, "properties": IMPAIRMENT_PROPS}
SYSCTLS = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]},
           "propertyNames": {"pattern": r"^net\."}}
ENDPOINT = {"oneOf": [NAME, {
    "type": "object", "additionalProperties": False, "required": ["node"],
    "properties": {"node": NAME, "ifname": {"type": "string", "maxLength": 15},
                   "ipv4": {"type": "string"}, "ipv6": {"type": "string"}}}]}

SCHEDULE = {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["at", "link", "set"],
    "description": "link changes over time, relative to when flows start",
    "properties": {
        "at": {"type": "string", "description": "e.g. 5s"},
        "for": {"type": "string", "description": "revert after this long"},
        "link": {"type": "string", "description": "a link named a-b"},
        "direction": {"enum": ["forward", "reverse", "both"]},
        "set": IMPAIRMENT}}}


def topology_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "testbed topology",
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "nodes"],
        "properties": {
            "name": NAME,
            "description": {"type": "string"},
            "addressing": {"type": "object", "additionalProperties": False, "properties": {
                "ipv4": {"type": "string", "description": "pool, default 10.0.0.0/16"},
                "prefix": {"enum": [30, 31]},
                "ipv6": {"type": "string", "description": "pool; one /64 per link"},
                "routing": {"enum": ["hosts", "all"]}}},
            "defaults": {"type": "object", "additionalProperties": False, "properties": {
                "cc": {"type": "string"}, "sysctls": SYSCTLS}},
            "nodes": {"type": "object", "minProperties": 1, "propertyNames": NAME,
                      "additionalProperties": {"type": ["object", "null"],
                                               "additionalProperties": False, "properties": {
                          "kind": {"enum": ["host", "router"]},
                          "cc": {"type": "string"},
                          "sysctls": SYSCTLS,
                          "routes": {"type": "array", "items": {
                              "type": "object", "additionalProperties": False,
                              "required": ["to", "via"],
                              "properties": {"to": {"type": "string"},
                                             "via": {"type": "string"}}}}}}},
            "schedule": SCHEDULE,
            "links": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["endpoints"],
                "properties": {
                    "endpoints": {"type": "array", "items": ENDPOINT, "minItems": 2,
                                  "maxItems": 2},
                    "mtu": {"type": "integer", "minimum": 68, "maximum": 65535},
                    "forward": IMPAIRMENT, "reverse": IMPAIRMENT,
                    **IMPAIRMENT_PROPS}}},
        },
    }
