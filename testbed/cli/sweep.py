"""The sweep subcommands: ``testbed matrix`` lists a workload's runs (and the CI
jobs that cover them) without running anything; ``testbed merge`` gathers the
run directories of a sweep's workers into one, saying what is missing or
duplicated. ``register(subparsers)`` adds both."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from testbed.analysis.merge import load_listing, merge_runs
from testbed.cli import options
from testbed.cli.args import repetitions
from testbed.errors import ConfigError
from testbed.workload.matrix import load_matrix
from testbed.workload.sharding import MAX_JOBS, Selection, sweep_listing, worker_points


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "matrix", help="list a workload's runs (ids, seeds) and the jobs that cover them",
        description="Expand a workload's matrix and repetitions, as 'testbed run' would, and "
                    "list each run: index, id, seed, point. Nothing is run. A worker given the "
                    "same --set/--repeat runs one of them with --point ID, --index N, --shard I/N "
                    "or --point-from-env; given one of those here, only the runs that worker would do are "
                    "listed.")
    p.add_argument("workload", type=Path, help="workload YAML file")
    options.add_variables(p, more=" pins a matrix dimension;")
    p.add_argument("--repeat", type=repetitions, default=None, help="repetitions of each point (overrides the file)")
    p.add_argument("--json", action="store_true",
                   help="the listing as JSON, with the matrix hash and one CI job per run (or shard)")
    p.add_argument("--max-jobs", type=int, default=MAX_JOBS, metavar="N",
                   help=f"with --json: at most N jobs; more runs are split into N shards "
                        f"(default: {MAX_JOBS}, GitHub Actions' limit)")
    options.add_selection(p)
    p.set_defaults(func=matrix_command)

    p = subparsers.add_parser(
        "merge", help="gather the run directories of a sweep's workers into one",
        description="Copy the runs under each DIR into OUT, checking that they are runs of one "
                    "matrix, that none is there twice, and (with --matrix) that none is missing. "
                    "Exit 0 when complete (or --allow-partial), 1 when runs are missing, 7 when "
                    "the runs cannot be merged.")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run directories or directories of runs")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="directory to merge into")
    p.add_argument("--matrix", type=Path, default=None, metavar="FILE",
                   help="the sweep's listing ('testbed matrix --json'): runs missing from it are reported")
    p.add_argument("--allow-partial", action="store_true", help="exit 0 even when runs are missing")
    p.add_argument("--allow-mixed", action="store_true",
                   help="merge runs of different matrices (other files, --set or --repeat)")
    p.set_defaults(func=merge_command)


def matrix_command(args: argparse.Namespace) -> int:
    if args.repeat is not None and args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    matrix = load_matrix(args.workload, options.variables(args), args.repeat)
    selection = options.selection(args)
    if selection == Selection():
        listing = sweep_listing(matrix, args.max_jobs)
        lines = matrix.lines()
    else:   # what a worker with these options would run (nothing is run)
        points = worker_points(matrix, selection, os.environ)
        listing = {**matrix.listing(), "selected": [p.index for p in points],
                   "points": [p.as_json() for p in points]}
        lines = matrix.lines()[:1] + [line for p, line in zip(matrix.points, matrix.lines()[1:])
                                      if p in points]
    print(json.dumps(listing, indent=2) if args.json else "\n".join(lines))
    return 0


def merge_command(args: argparse.Namespace) -> int:
    listing = load_listing(args.matrix) if args.matrix is not None else None
    report = merge_runs(args.dirs, args.output, allow_partial=args.allow_partial,
                        allow_mixed=args.allow_mixed, listing=listing)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
