"""The ``testbed run`` subcommand: run a workload file and print where the
results went. ``register(subparsers)`` adds it to the main parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from testbed import cli_args
from testbed.loader import parse_assignment


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run a workload: up, traffic + collectors, results, down",
        description="Run a workload file (every point of its matrix, each repeated). "
                    "Prints the run directory of each run.")
    p.add_argument("workload", type=Path, help="workload YAML file (e.g. workloads/cubic-vs-bbr.yaml)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="set a template variable (repeatable); pins a matrix dimension; "
                   "VALUE is read as YAML (5 is a number, 1%% a string)")
    p.add_argument("--repeat", type=int, default=None, help="repetitions of each point (overrides the file)")
    p.add_argument("--output", type=cli_args.output_dir, default=None,
                   help="results directory (default: ./results)")
    p.add_argument("--testbed", dest="testbed_name", default=None, type=cli_args.instance_name,
                   help="run against a testbed already up ('testbed up'), leaving it up")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="with --testbed: run even where the testbed's links differ from what the "
                   "workload's variables say (the runs are marked suspect and record the "
                   "differences)")
    p.add_argument("--name", default=None, type=cli_args.instance_name,
                   help="instance name for the testbed brought up")
    p.add_argument("--link-backend", default="auto", choices=("auto", "netem", "userspace"),
                   help="link emulation backend (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run_command)
    return p


def run_command(args: argparse.Namespace) -> int:
    from testbed.errors import ConfigError
    from testbed.experiment import run_workload
    if args.repeat is not None and args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    variables = dict(parse_assignment(a) for a in args.assignments)
    dirs = run_workload(args.workload, variables=variables, repeat=args.repeat, output=args.output,
                        testbed_name=args.testbed_name, progress=not args.quiet, name=args.name,
                        link_backend=args.link_backend, allow_mismatch=args.allow_mismatch)
    for d in dirs:
        print(d)
    return 0
