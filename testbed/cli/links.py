"""The ``testbed validate`` and ``testbed link show|set`` subcommands.

``register(subparsers)`` adds them to the main parser; each handler returns
an exit code and raises ``TestbedError`` subclasses for errors.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from testbed.cli import options
from testbed.errors import ConfigError
from testbed.realize.state import pick_instance
from testbed.model.impairment import Impairment


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "validate", help="measure every emulated link and compare with its configuration",
        description="Bring the topology up (or use --testbed NAME, already up), measure RTT, "
                    "loss and rate of each emulated link direction and print configured vs "
                    "measured. Exit code 1 if any link is outside tolerance.")
    p.add_argument("topology", nargs="?", help="topology file (not needed with --testbed)")
    options.add_testbed(p)
    options.add_name(p, "from the topology; not with --testbed")
    options.add_variables(p)
    options.add_link_backend(p)
    p.add_argument("--link", dest="links", action="append", default=[], metavar="A-B",
                   help="only this link (repeatable)")
    p.add_argument("--thorough", action="store_true",
                   help="100k-packet loss checks and longer rate runs (minutes per link)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=validate_command)

    p = subparsers.add_parser("link", help="show or change emulated links of a testbed that is up")
    sub = p.add_subparsers(dest="link_command", metavar="show|set")
    sub.required = True
    s = sub.add_parser("show", help="each emulated direction: configured, backend, kernel view")
    s.add_argument("--link", dest="link_name", default=None, metavar="A-B", help="only this link")
    _add_instance(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=link_show_command)
    s = sub.add_parser("set", help="change some impairments of a link, keeping the others",
                       description="e.g. testbed link set r1-r2 delay=50ms loss=1%. "
                                   "forward is the direction as named (r1->r2 for r1-r2).")
    s.add_argument("link", metavar="A-B")
    s.add_argument("settings", nargs="+", metavar="KEY=VALUE")
    s.add_argument("--direction", choices=("forward", "reverse", "both"), default="both")
    _add_instance(s)
    s.set_defaults(func=link_set_command)


def _add_instance(p: argparse.ArgumentParser) -> None:
    # a link is only ever changed on a testbed that is up, so --name and --testbed are one here
    p.add_argument("--name", "--testbed", dest="name", default=None, metavar="NAME",
                   type=options.instance_name,
                   help="testbed instance name (default: the only instance up)")


def link_show_command(args: argparse.Namespace) -> int:
    # emulation imports pyroute2 (~0.3 s): not for --help or compare
    from testbed.emulation import live
    entries = live.show(pick_instance(args.name), args.link_name)
    if args.json:
        print(json.dumps(entries, indent=1, default=str))
        return 0
    for e in entries:
        if e["configured"] is None:
            print(f"{e['link']:<12} {e['direction']:<16} not emulated")
            continue
        print(f"{e['link']:<12} {e['direction']:<16} {e['backend']}: {e['configured']}  "
              f"(at {e['at']})")
        for line in kernel_lines(e["kernel"] or {}):
            print(f"{'':<29} {line}")
    return 0


def kernel_lines(kernel: dict) -> list[str]:
    """What a backend read back, for people: one line per part (--json has it all)."""
    out = []
    if kernel.get("impairment"):
        out.append("in force: " + Impairment.from_fields(kernel["impairment"]).describe())
    for key, value in kernel.items():
        if key in ("backend", "impairment") or value is None:   # None: not there (no tbf)
            continue
        if key == "tbf" and isinstance(value, dict) and "rate_bytes" in value:
            value = {"rate": f"{value['rate_bytes'] * 8 / 1e6:g} Mbit/s",
                     **{k: f"{v} B" if k == "limit" else v for k, v in value.items()
                        if k != "rate_bytes"}}
        words = ("off", "on") if key == "offloads" else ("no", "yes")
        out.append(f"{key.replace('_', ' ')}: {_flat(value, words)}")
    return out


def _flat(value: object, words: tuple[str, str] = ("no", "yes")) -> str:
    if isinstance(value, dict):     # what is None is not there (no bottleneck, no tbf)
        return ", ".join(f"{k.replace('_', ' ')} {_flat(v, words)}" for k, v in value.items()
                         if v is not None)
    if isinstance(value, list):
        return "; ".join(_flat(v, words) for v in value) or "none"
    if isinstance(value, bool):
        return words[value]
    return str(value)


def link_set_command(args: argparse.Namespace) -> int:
    # emulation imports pyroute2 (~0.3 s): not for --help or compare
    from testbed.emulation import live
    imp = live.parse_settings(args.settings)
    for d, merged in live.change(pick_instance(args.name), args.link, imp, args.direction):
        print(f"{args.link} {d.label}: {merged.describe()}")
    return 0


def validate_command(args: argparse.Namespace) -> int:
    # instance.validate imports pyroute2 (~0.3 s) through emulation: not for --help or compare
    from testbed.instance import validate
    from testbed.model.document import check_topology_file  # jinja2 and yaml: ~0.1 s
    if not args.testbed_name and not args.topology:
        raise ConfigError("give a topology file, or --testbed NAME for one already up")
    options.name_or_testbed(args, "validate")
    variables = options.variables(args)
    if args.topology:
        check_topology_file(args.topology, variables)
    report = validate.validate_cli(
        topology=args.topology, testbed_name=args.testbed_name, name=args.name,
        variables=variables,
        link_backend=args.link_backend, links=args.links or None, thorough=args.thorough)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.render())
    return 0 if report.ok else 1
