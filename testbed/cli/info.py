"""The subcommands that describe rather than change: ``doctor`` (this host) and
``schema`` (the topology or workload file format). ``register(subparsers)`` adds both."""

from __future__ import annotations

import argparse
import json
from typing import Any

from testbed.model.schema import topology_schema
from testbed.workload.schema import workload_schema


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("doctor",
                              help="what this kernel and host offer and lack, and what to do")
    p.set_defaults(func=doctor_command)
    p = subparsers.add_parser("schema", help="print the JSON Schema of topology (or workload) files")
    p.add_argument("--workload", action="store_true",
                   help="the schema of workload files instead")
    p.set_defaults(func=schema_command)


def doctor_command(args: argparse.Namespace) -> int:
    # realize.doctor imports pyroute2 (~0.3 s): not for --help or compare
    from testbed.realize import doctor
    checks = doctor.run_checks()
    print(doctor.render(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def schema_command(args: argparse.Namespace) -> int:
    print(json.dumps(workload_schema() if args.workload else topology_schema(), indent=1))
    return 0
