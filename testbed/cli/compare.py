"""The ``testbed compare`` and ``testbed report`` subcommands. They read run
directories only (no root). ``register(subparsers)`` adds both."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

from testbed.analysis import load_runs, summarize, tables, verdicts
from testbed.analysis.fields import with_manifest_fields
from testbed.analysis.metrics import METRICS
from testbed.cli.plot import add_time_range, check_time_range
from testbed.errors import ConfigError


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_DIR",
                   help="run directories, or directories of runs (e.g. results/cubic-vs-bbr/)")
    p.add_argument("--by", action="append", default=[], metavar="KEY",
                   help="also split groups by a flow attribute (cc, flow, from, to, protocol), "
                        "show this variable, or group by what the runs ran on: kernel, node, "
                        "host, job, engine, link_backend, point_id, matrix, or a dotted "
                        "manifest.json path such as tools.iperf3 (repeatable)")
    p.add_argument("--include-suspect", action="store_true",
                   help="include runs marked suspect (host saturated); excluded and counted by default")
    p.add_argument("--include-partial", action="store_true",
                   help="include partial, failed or interrupted runs")


def exit_codes(assertions: bool) -> str:
    """The --help epilog's list of exit codes (with or without those of --assert)."""
    return textwrap.fill(
        "exit codes: 0 done" + (", every --assert held; 1 an --assert failed" if assertions
                                else "") +
        "; 2 bad command line" + (" or --assert expression" if assertions else "") +
        "; 7 the runs cannot be read: a result.json or manifest.json that is missing, corrupt "
        "or not the shape 'testbed run' writes (the message names the file and the field), "
        "runs of different workloads, or no runs left to compare")


def register(subparsers: Any) -> None:
    names = ", ".join(METRICS)
    p = subparsers.add_parser(
        "compare", help="compare runs: tables per group, CIs over repetitions, --assert verdicts",
        description="Group runs by matrix point, show each metric's mean and 95 % CI over "
                    f"repetitions, test differences (Mann-Whitney U). Metrics: {names}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='example: testbed compare results/loss-sweep --by cc '
               '--assert "goodput[cc=bbr,loss=1%] > 2 * goodput[cc=cubic,loss=1%]" --junit out.xml'
               "\n\n" + exit_codes(True))
    _add_selection(p)
    p.add_argument("--format", choices=tables.FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--metrics", "--metric", action="append", default=None, metavar="M1,M2",
                   help="columns to show, repeatable (default: those with data among goodput, "
                        "RTT, qdelay, retrans, udp_loss, fct, jain, utilisation and the "
                        "bottleneck queue's drops, marks, sojourn_p50)")
    p.add_argument("--test-metric", default="goodput", metavar="METRIC",
                   help="metric for the significance tests between groups (default: goodput)")
    p.add_argument("--assert", dest="assertions", action="append", default=[], metavar="EXPR",
                   help="a condition over the summary, e.g. 'goodput[cc=bbr] > 50mbit'; "
                        "exit code 1 if one fails (repeatable)")
    p.add_argument("--junit", type=Path, default=None, metavar="FILE",
                   help="write the assertions' verdicts as JUnit XML")
    p.set_defaults(func=compare_command)

    p = subparsers.add_parser(
        "report", help="one self-contained HTML page with tables, plots and manifests",
        description="Write an HTML report (plots embedded, readable offline) of the runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=exit_codes(False))
    _add_selection(p)
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"),
                   help="HTML file to write (default: report.html)")
    p.add_argument("--png-dir", type=Path, default=None,
                   help="also write each plot as a PNG file into this directory")
    add_time_range(p)
    p.add_argument("--all-runs", action="store_true",
                   help="time series of every run, not only the first of each group")
    p.set_defaults(func=report_command)


def _metrics(args: list[str] | None, summary: Any) -> list[str]:
    """``--metrics`` given once or more (``--metrics a,b --metrics c``), in order, once each."""
    if args is None:
        return tables.visible_metrics(summary, tables.default_metrics(summary))
    wanted = list(dict.fromkeys(m.strip() for arg in args for m in arg.split(",") if m.strip()))
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown {', '.join(unknown)} (known: {', '.join(METRICS)})")
    return wanted


def compare_command(args: argparse.Namespace) -> int:
    if args.test_metric not in METRICS:
        raise ConfigError(f"--test-metric: unknown {args.test_metric!r} (known: {', '.join(METRICS)})")
    if args.junit is not None and not args.assertions:
        raise ConfigError("--junit needs at least one --assert")
    runset = load_runs(args.paths, include_suspect=args.include_suspect,
                       include_partial=args.include_partial)
    runset = with_manifest_fields(runset, args.by)
    summary = summarize(runset, args.by)
    metrics = _metrics(args.metrics, summary)
    # parse and resolve every assertion before printing anything
    results = verdicts.check_assertions(summary, args.assertions) if args.assertions else []
    comparisons = summary.comparisons(args.test_metric)
    if args.format == "table":
        tables.print_table(summary, metrics, comparisons)
    elif args.format == "csv":
        sys.stdout.write(tables.to_csv(summary, metrics))
    elif args.format == "json":
        print(tables.to_json(summary, metrics, comparisons))
    else:
        sys.stdout.write(tables.to_markdown(summary, metrics, comparisons))
    out = sys.stdout if args.format == "table" else sys.stderr
    for v in results:
        print(f"{'PASS' if v.passed else 'FAIL'}: {v.text}  ({v.message})", file=out)
    if args.junit is not None:
        verdicts.write_junit(results, args.junit)
    return 1 if any(not v.passed for v in results) else 0


def report_command(args: argparse.Namespace) -> int:
    # analysis.report imports matplotlib (~0.5 s): only for report
    from testbed.analysis import report
    check_time_range(args)
    runset = load_runs(args.paths, include_suspect=args.include_suspect,
                       include_partial=args.include_partial)
    runset = with_manifest_fields(runset, args.by)
    path = report.write_report(runset, args.output, by=args.by, png_dir=args.png_dir,
                               since=args.since, until=args.until, every_run=args.all_runs)
    print(path)
    return 0
