"""The ``testbed plot`` subcommand: one run's plots as PNG files (no root).

``--tsg``: the time-sequence graph of a flow's connection from the run's pcap;
otherwise the run's time series. ``--from``/``--to`` zoom to a time range in
seconds on the run's clock. ``register(subparsers)`` adds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError
from testbed.analysis.runs import load_run
from testbed.analysis.metrics import RunView


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds such as 2.5, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def add_time_range(p: argparse.ArgumentParser) -> None:
    """``--from S --to S``: a time range in seconds on the run's clock."""
    p.add_argument("--from", dest="since", type=seconds_arg, default=None, metavar="S",
                   help="start of the time range (s since the run's t0)")
    p.add_argument("--to", dest="until", type=seconds_arg, default=None, metavar="S",
                   help="end of the time range (s)")


def check_time_range(args: argparse.Namespace) -> None:
    if args.since is not None and args.until is not None and args.until <= args.since:
        raise ConfigError(f"--to {args.until:g} must be after --from {args.since:g}")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="one run's plots as PNG: time series, or a flow's time-sequence graph",
        description="Plot one run directory: its time series (default) or, with --tsg, the "
                    "tcptrace-style time-sequence graph of a flow's connection (segments, ACK "
                    "line, receive window, SACK blocks, retransmissions) from its pcap. For a "
                    "packet-level look, open raw/*.pcap in Wireshark (Statistics > TCP Stream "
                    "Graphs) or read it with tshark.",
        epilog="example: testbed plot results/lesson-fast-recovery/RUN --flow bulk --tsg "
               "--from 2 --to 4 -o recovery.png")
    p.add_argument("run", type=Path, metavar="RUN", help="a run directory (holding result.json)")
    p.add_argument("--flow", default=None, metavar="NAME", help="the flow (needed with --tsg)")
    p.add_argument("--tsg", action="store_true", help="time-sequence graph from the pcap")
    add_time_range(p)
    p.add_argument("-o", "--output", type=Path, default=Path("plot.png"),
                   help="PNG file to write (default: plot.png)")
    p.set_defaults(func=plot_command)


def plot_command(args: argparse.Namespace) -> int:
    # matplotlib (plots, tsg) loads only for this command, not for every --help
    from testbed.analysis import plots, tsg
    check_time_range(args)
    if args.tsg and args.flow is None:
        raise ConfigError("--tsg needs --flow NAME (the flow whose connection to draw)")
    run = load_run(args.run)
    title = f"{run.workload}: run {run.run_id}"
    if args.tsg:
        png = plots.time_sequence(tsg.run_time_sequence(run, args.flow), f"{title}, flow "
                                  f"{args.flow}", args.since, args.until)
    else:
        png = plots.timeseries(RunView(run), title, since=args.since, until=args.until,
                               flows=[args.flow] if args.flow else None)
    if args.output.parent and not args.output.parent.is_dir():
        raise ConfigError(f"-o {args.output}: no such directory {args.output.parent}")
    args.output.write_bytes(png)
    print(args.output)
    return 0
