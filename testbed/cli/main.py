"""The ``testbed`` command line. Parses arguments, calls the library, prints for people.

Only ``TestbedError`` is caught: it becomes one line on stderr and a
non-zero exit (``-v`` adds the traceback). Anything else is a bug and shows
its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from typing import Any, Sequence

from testbed.cli import compare as cli_compare
from testbed.cli import links as cli_links
from testbed.cli import run as cli_run
from testbed.errors import TestbedError


def _add_common(p: argparse.ArgumentParser, *, name: bool = True, template: bool = False) -> None:
    if name:
        p.add_argument("--name", help="testbed instance name (default: from the topology, or "
                       "the only instance up)")
    if template:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="template variable (repeatable); overrides the file's variables; "
                       "VALUE is read as YAML (5 is a number, 1%% a string)")
        p.add_argument("--env", action="store_true",
                       help="expose the process environment to the template as 'env'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed", description="Network experiments on real Linux kernel stacks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version="testbed 0.1.0")
    from testbed.cli import remote as cli_remote
    cli_remote.add_options(parser)  # --host/--hosts/...: handled in main() before parsing
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("up", help="build a topology's namespaces, links and routes")
    p.add_argument("topology")
    _add_common(p, template=True)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--link-backend", choices=("auto", "netem", "userspace"), default="auto",
                   help="link emulation backend (default auto: netem if the kernel has it)")

    p = sub.add_parser("plan", help="print what 'up' would do, touching nothing")
    p.add_argument("topology")
    _add_common(p, template=True)
    p.add_argument("--json", action="store_true")
    p.add_argument("--link-backend", choices=("auto", "netem", "userspace"), default="auto")

    p = sub.add_parser("down", help="remove exactly what 'up' made")
    p.add_argument("topology", nargs="?", help="take the instance name from this topology")
    _add_common(p, template=True)

    p = sub.add_parser("status", help="what is up: nodes, interfaces, addresses, routes, cc")
    _add_common(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("exec", help="run a command inside a node: exec NODE -- CMD ...")
    _add_common(p)
    p.add_argument("node")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")

    p = sub.add_parser("clean", help="remove every leftover the testbed owns (after kill -9)")
    p.add_argument("--name", help="only this instance (default: every instance)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")

    sub.add_parser("doctor", help="what this kernel and host offer and lack, and what to do")
    sub.add_parser("schema", help="print the JSON Schema of topology files")
    cli_run.register(sub)
    cli_compare.register(sub)
    cli_links.register(sub)
    return parser


def _variables(args: argparse.Namespace) -> dict[str, Any]:
    from testbed.model.document import parse_assignment
    return dict(parse_assignment(item) for item in getattr(args, "set", []) or [])


def _load_plan(args: argparse.Namespace):
    from testbed.model.document import check_topology_file
    from testbed.instance.network import load_topology, plan_for
    variables = _variables(args)
    check_topology_file(args.topology, variables)
    topo = load_topology(args.topology, variables, use_env=args.env)
    return plan_for(topo, args.name)


def _render_plan(plan, requested: str, as_json: bool) -> str:
    from testbed.emulation import links
    selection = links.choose(plan, requested)
    if as_json:
        data = plan.to_dict()
        if selection:
            data["link_backend"] = selection.backend.name
            data["link_steps"] = links.steps(plan, selection)
        return json.dumps(data, indent=1)
    text = plan.render()
    if selection:
        text += f"\n   link backend: {selection.backend.name} ({selection.reason})"
        text += "".join(f"\n     {step}" for step in links.steps(plan, selection))
    return text


def cmd_plan(args: argparse.Namespace) -> int:
    print(_render_plan(_load_plan(args), args.link_backend, args.json))
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from testbed.instance.network import build
    plan = _load_plan(args)
    if args.dry_run:
        print(_render_plan(plan, args.link_backend, False))
        return 0
    net, realized = build(plan, link_backend=args.link_backend)
    if args.json:
        print(json.dumps({"name": net.name, "seconds": round(realized.seconds, 3),
                          "cc": realized.cc, "host_changes": realized.host_changes,
                          "link_backend": net.link_backend}, indent=1))
        return 0
    n, l = len(net.nodes), len(net.links)
    print(f"testbed {net.name} is up: {n} node{'s' * (n != 1)}, {l} link{'s' * (l != 1)} "
          f"in {realized.seconds:.2f} s")
    if len(net.nodes) <= 40:
        print(f"  {'node':<10} {'kind':<7} {'cc':<7} {'namespace':<28} addresses")
        for node in net.nodes.values():
            addrs = ", ".join(str(a) for i in node.interfaces for a in i.addresses)
            print(f"  {node.name:<10} {node.kind:<7} {realized.cc[node.name]:<7} "
                  f"{node.netns:<28} {addrs}")
    if net.link_backend:
        print(f"  emulated links: {len(net.deployed.emulated)} directions, backend "
              f"{net.link_backend} ({net.deployed.link_backend_reason})")
    for note in realized.notes:
        print(f"  note: {note}")
    if realized.host_changes:
        print(f"  host change: added {' '.join(realized.host_changes)} to "
              "net.ipv4.tcp_allowed_congestion_control (restored on down)")
    print(f"next: testbed exec --name {net.name} NODE -- CMD ...   |   testbed down --name {net.name}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from testbed.realize import state
    from testbed.realize import build as backend
    name = args.name
    if name is None and args.topology:
        name = _load_plan(args).instance
    if name is None:
        owned = set(backend.find_owned().values()) | set(state.instances())
        if len(owned) > 1:
            raise TestbedError(f"several testbeds are up ({', '.join(sorted(owned))}): "
                               "choose one with --name")
        if not owned:
            print("no testbed is up: nothing to take down")
            return 0
        name = owned.pop()
    extra = [n for n, inst in backend.find_owned(name).items()]
    if not extra and not state.instance_dir(name).exists():
        print(f"no testbed named {name!r} is up: nothing to take down")
        return 0
    report = backend.teardown(name, extra_namespaces=extra)
    print(f"testbed {name} is down: removed {len(report.namespaces)} namespaces, ended "
          f"{len(report.processes)} processes in {report.seconds:.2f} s")
    if report.host_restored:
        print(f"  restored net.ipv4.tcp_allowed_congestion_control (removed "
              f"{' '.join(report.host_restored)})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from testbed.instance import status
    facts = status.all_status(args.name)
    if args.name and not facts["instances"][0].get("complete", False) \
            and not facts["instances"][0].get("namespaces"):
        raise TestbedError(f"no testbed named {args.name!r} is up")
    print(json.dumps(facts, indent=1) if args.json else status.render(facts))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from testbed.instance.network import attach
    from testbed.realize import state
    from testbed.kernel import netns
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise TestbedError("give the command after --, e.g. testbed exec h1 -- ping -c 3 h3")
    net = attach(state.pick_instance(args.name))
    node = net[args.node]
    hosts = net.state_dir / "hosts"
    netns.preexec_into(node.netns, str(hosts) if hosts.exists() else None)()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        print(f"testbed: error: {argv[0]}: command not found (in node {node.name})",
              file=sys.stderr)
        return 127  # as a shell, and `ip netns exec`, say it
    except PermissionError:
        print(f"testbed: error: {argv[0]}: permission denied", file=sys.stderr)
        return 126
    return 127  # not reached


def cmd_clean(args: argparse.Namespace) -> int:
    from testbed.realize import state
    from testbed.realize import build as backend
    owned = backend.find_owned(args.name)
    instances = set(state.instances()) | set(owned.values())
    if args.name:
        instances &= {args.name}
    if args.dry_run:
        for inst in sorted(instances):
            names = sorted(set(state.Journal(inst).namespaces()) |
                           {n for n, i in owned.items() if i == inst})
            print(f"{inst}: {', '.join(n for n in names if backend.netns.exists(n)) or 'state only'}")
        return 0
    total_ns = total_procs = 0
    for inst in sorted(instances):
        report = backend.teardown(inst, extra_namespaces=[n for n, i in owned.items() if i == inst])
        total_ns += len(report.namespaces)
        total_procs += len(report.processes)
        print(f"cleaned {inst}: {len(report.namespaces)} namespaces, "
              f"{len(report.processes)} processes")
    restored = [] if args.name else state.release_host_changes("")
    state.tidy()
    if restored:
        print(f"restored net.ipv4.tcp_allowed_congestion_control (removed {' '.join(restored)})")
    if not instances and not restored:
        print("nothing to clean: no namespace, process or host change of testbed's is left")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from testbed.realize import doctor
    checks = doctor.run_checks()
    print(doctor.render(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from testbed.model.schema import topology_schema
    print(json.dumps(topology_schema(), indent=1))
    return 0


COMMANDS = {
    "up": cmd_up, "plan": cmd_plan, "down": cmd_down, "status": cmd_status,
    "exec": cmd_exec, "clean": cmd_clean, "doctor": cmd_doctor, "schema": cmd_schema,
}


def main(argv: Sequence[str] | None = None) -> int:
    # behave like other Unix tools when piped into `head`
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    from testbed.cli import remote as cli_remote
    raw = list(sys.argv[1:] if argv is None else argv)
    if cli_remote.wants_remote(raw):
        return cli_remote.main(raw)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        handler = COMMANDS.get(args.command) or args.func
        return handler(args)
    except TestbedError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from testbed.realize.build import Terminated
        term = isinstance(exc, Terminated)
        print(f"testbed: {'terminated' if term else 'interrupted'}; what was being built has "
              "been removed", file=sys.stderr)
        return 128 + (signal.SIGTERM if term else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
