"""The ``testbed run`` subcommand: run a workload file and print where the
results went. ``register(subparsers)`` adds it to the main parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from testbed.cli import options
from testbed.cli.args import output_dir, repetitions
from testbed.errors import ConfigError


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run a workload: up, traffic + collectors, results, down",
        description="Run a workload file (every point of its matrix, each repeated). "
                    "Prints the run directory of each run.")
    p.add_argument("workload", type=Path, help="workload YAML file (e.g. workloads/cubic-vs-bbr.yaml)")
    options.add_variables(p, more=" pins a matrix dimension;")
    p.add_argument("--repeat", type=repetitions, default=None, help="repetitions of each point (overrides the file)")
    p.add_argument("--output", type=output_dir, default=None, help="results directory (default: ./results)")
    options.add_testbed(p)
    p.add_argument("--allow-mismatch", action="store_true",
                   help="with --testbed: run even where the testbed's links differ from what the "
                   "workload's variables say (the runs are marked suspect and record the "
                   "differences)")
    options.add_name(p, "from the topology; not with --testbed")
    options.add_link_backend(p)
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    options.add_selection(p)
    p.set_defaults(func=run_command)
    return p


def check_run_args(args: argparse.Namespace) -> None:
    """What ``run`` refuses before anything is loaded (here and with --host/--hosts)."""
    if args.repeat is not None and args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    options.name_or_testbed(args, "run")


def run_command(args: argparse.Namespace) -> int:
    # run.workload imports pyroute2 (~0.3 s) through instance and emulation: not for --help
    from testbed.run.workload import run_workload
    check_run_args(args)
    dirs = run_workload(args.workload, variables=options.variables(args), repeat=args.repeat,
                        output=args.output, testbed_name=args.testbed_name,
                        progress=not args.quiet, name=args.name, link_backend=args.link_backend,
                        allow_mismatch=args.allow_mismatch, selection=options.selection(args))
    for d in dirs:
        print(d)
    return 0
