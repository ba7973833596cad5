"""The subcommands of one testbed's life: ``plan``, ``up``, ``status``, ``exec``,
``down`` and ``clean``. ``register(subparsers)`` adds them; each handler parses
nothing more, calls the library and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from testbed.cli import options
from testbed.cli.args import instance_name
from testbed.errors import ConfigError, TestbedError
from testbed.kernel import netns
from testbed.realize import state

FROM_TOPOLOGY = "from the topology, or the only instance up"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("up", help="build a topology's namespaces, links and routes")
    _add_topology(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    options.add_link_backend(p)
    p.set_defaults(func=up_command)

    p = subparsers.add_parser("plan", help="print what 'up' would do, touching nothing")
    _add_topology(p)
    p.add_argument("--json", action="store_true")
    options.add_link_backend(p)
    p.set_defaults(func=plan_command)

    p = subparsers.add_parser("down", help="remove exactly what 'up' made")
    p.add_argument("topology", nargs="?", help="take the instance name from this topology")
    options.add_name(p, FROM_TOPOLOGY)
    options.add_variables(p, env=True)
    p.set_defaults(func=down_command)

    p = subparsers.add_parser("status", help="what is up: nodes, interfaces, addresses, routes, cc")
    options.add_name(p, "the only instance up")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=status_command)

    p = subparsers.add_parser("exec", help="run a command inside a node: exec NODE -- CMD ...")
    options.add_name(p, "the only instance up")
    p.add_argument("node")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=exec_command)

    p = subparsers.add_parser("clean", help="remove every leftover the testbed owns (after kill -9)")
    options.add_name(p, "every instance")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed")
    p.set_defaults(func=clean_command)


def _add_topology(p: argparse.ArgumentParser) -> None:
    p.add_argument("topology")
    options.add_name(p, FROM_TOPOLOGY)
    options.add_variables(p, env=True)


def _load_plan(args: argparse.Namespace) -> Any:
    # instance.network imports pyroute2 (~0.3 s) through emulation: not for --help or compare
    from testbed.instance.network import load_topology, plan_for
    from testbed.model.document import check_topology_file  # jinja2 and yaml: ~0.1 s
    variables = options.variables(args)
    check_topology_file(args.topology, variables)
    topo = load_topology(args.topology, variables, use_env=args.env)
    return plan_for(topo, args.name)


def _render_plan(plan: Any, requested: str, as_json: bool) -> str:
    # emulation imports pyroute2 (~0.3 s): not for --help or compare
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


def plan_command(args: argparse.Namespace) -> int:
    print(_render_plan(_load_plan(args), args.link_backend, args.json))
    return 0


def up_command(args: argparse.Namespace) -> int:
    # instance.network imports pyroute2 (~0.3 s) through emulation: not for --help or compare
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
    else:
        _print_up(net, realized)
    return 0


def _print_up(net: Any, realized: Any) -> None:
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


def down_command(args: argparse.Namespace) -> int:
    # realize.teardown reads names from the planner, which brings jinja2 and yaml (~0.1 s)
    from testbed.realize import teardown
    name = args.name
    if name is None and args.topology:
        name = _load_plan(args).instance
    report = teardown.down(name)
    if report is None:
        print(f"no testbed named {name!r} is up: nothing to take down" if name else
              "no testbed is up: nothing to take down")
        return 0
    print(f"testbed {report.instance} is down: removed {len(report.namespaces)} namespaces, "
          f"ended {len(report.processes)} processes in {report.seconds:.2f} s")
    if report.host_restored:
        print(f"  restored net.ipv4.tcp_allowed_congestion_control (removed "
              f"{' '.join(report.host_restored)})")
    if report.tracefs_unmounted:
        print(f"  unmounted tracefs at {report.tracefs_unmounted} (testbed had mounted it "
              "for tcp events)")
    return 0


def status_command(args: argparse.Namespace) -> int:
    # instance.status imports pyroute2 (~0.3 s) through emulation: not for --help or compare
    from testbed.instance import status
    facts = status.all_status(args.name)
    if args.name and not facts["instances"][0].get("complete", False) \
            and not facts["instances"][0].get("namespaces"):
        raise TestbedError(f"no testbed named {args.name!r} is up")
    print(json.dumps(facts, indent=1) if args.json else status.render(facts))
    return 0


def _command_after_node(args: argparse.Namespace) -> list[str]:
    """The command of ``exec NODE [--name X] -- CMD ...``: argparse's REMAINDER keeps what
    follows NODE, so ``--name X`` given there is taken as exec's option, not the command's."""
    if "--" not in args.argv:
        return list(args.argv)
    cut = args.argv.index("--")
    head, command = args.argv[:cut], args.argv[cut + 1:]
    while head:
        option, _, value = head[0].partition("=")
        if option != "--name":
            raise ConfigError(f"exec: {head[0]!r} before --: only --name goes there "
                              "(exec [--name NAME] NODE -- CMD ...)")
        if not value:
            if len(head) < 2:
                raise ConfigError("exec: argument --name: expected one argument")
            value, head = head[1], head[1:]
        try:
            args.name = instance_name(value)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"exec: argument --name: {exc}") from None
        head = head[1:]
    return command


def exec_command(args: argparse.Namespace) -> int:
    # instance.network imports pyroute2 (~0.3 s) through emulation: not for --help or compare
    from testbed.instance.network import attach
    argv = _command_after_node(args)
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


def clean_command(args: argparse.Namespace) -> int:
    from testbed.realize import teardown  # ~0.1 s, see down_command
    if args.dry_run:
        for inst, namespaces in teardown.leftovers(args.name).items():
            print(f"{inst}: {', '.join(namespaces) or 'state only'}")
        return 0
    cleaned = teardown.clean(args.name)
    for report in cleaned.instances:
        print(f"cleaned {report.instance}: {len(report.namespaces)} namespaces, "
              f"{len(report.processes)} processes")
    if cleaned.host_restored:
        print("restored net.ipv4.tcp_allowed_congestion_control (removed "
              f"{' '.join(cleaned.host_restored)})")
    if not cleaned.instances and not cleaned.host_restored:
        print("nothing to clean: no namespace, process or host change of testbed's is left")
    return 0
