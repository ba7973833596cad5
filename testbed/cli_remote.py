"""``testbed --host USER@HOST COMMAND ...`` and ``testbed run W.yaml --hosts hosts.yaml``.

``testbed.cli.main`` hands the argv here when it holds ``--host`` or
``--hosts``. The remote options are taken out wherever they appear (up to
a ``--``), the rest is parsed by the normal parser (so mistakes are
reported here, before connecting) and then run on the host(s) by
``testbed.remote``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import traceback
from pathlib import Path
from typing import Sequence

from testbed.errors import ConfigError, TestbedError
from testbed.remote.session import WORKLOAD_SLOT, RemoteOptions, Session

# option -> (RemoteOptions field, takes a value)
OPTIONS = {
    "--host": ("host", True),
    "--hosts": ("hosts_file", True),
    "--trust-new-host-key": ("trust_new_host_key", False),
    "--remote-testbed": ("remote_testbed", True),
    "--remote-dir": ("remote_dir", True),
    "--remote-python": ("remote_python", True),
    "--known-hosts": ("known_hosts", True),
    "--identity": ("identity", True),
    "--ssh-config": ("ssh_config", True),
}
FILE_COMMANDS = ("up", "plan", "down")


def add_options(parser: argparse.ArgumentParser) -> None:
    """The remote options, for ``testbed --help`` (they are handled before parsing)."""
    g = parser.add_argument_group("remote hosts (SSH; keys, agent and ~/.ssh/config as with ssh)")
    g.add_argument("--host", metavar="[USER@]HOST[:PORT]",
                   help="run the command on this Linux host over SSH; files it names are "
                        "copied there and run directories copied back")
    g.add_argument("--hosts", metavar="HOSTS.yaml",
                   help="with 'run': spread the workload's matrix points over these hosts")
    g.add_argument("--trust-new-host-key", action="store_true",
                   help="accept and record a host key not yet in known_hosts (a changed key "
                        "is always refused)")
    g.add_argument("--remote-testbed", metavar="PATH",
                   help="testbed executable on the remote (default: testbed on its PATH if the "
                        "same version, else installed from this checkout into "
                        "~/.cache/testbed/venv)")
    g.add_argument("--remote-dir", metavar="DIR", help="remote work directory (default "
                   "~/.cache/testbed)")
    g.add_argument("--remote-python", metavar="PYTHON", help="remote python3 (default python3)")
    g.add_argument("--known-hosts", metavar="FILE", help="known_hosts file to read and record "
                   "into (default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts)")
    g.add_argument("--identity", metavar="KEYFILE", help="private key, like ssh -i")
    g.add_argument("--ssh-config", metavar="FILE", help="ssh config (default ~/.ssh/config)")


def split_argv(argv: Sequence[str]) -> tuple[RemoteOptions, list[str]]:
    """Take the remote options out of ``argv`` (not after ``--``)."""
    opts = RemoteOptions()
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item == "--":
            rest += items[i:]
            break
        flag, eq, value = item.partition("=")
        if flag in OPTIONS:
            field, takes_value = OPTIONS[flag]
            if not takes_value:
                if eq:
                    raise ConfigError(f"{flag} takes no value")
                setattr(opts, field, True)
            else:
                if not eq:
                    if i + 1 >= len(items):
                        raise ConfigError(f"{flag} needs a value")
                    i += 1
                    value = items[i]
                setattr(opts, field, value)
        else:
            rest.append(item)
        i += 1
    return opts, rest


def check_remote_paths(opts: RemoteOptions) -> None:
    """The remote paths given (they become paths, and one of them a directory testbed
    removes session directories under, as root) are usable, before connecting."""
    from testbed.cli_args import path_problem
    for flag in ("--remote-dir", "--remote-testbed", "--remote-python"):
        value = getattr(opts, OPTIONS[flag][0])
        problem = None if value is None else path_problem(value)
        if problem:
            raise ConfigError(f"{flag} {value!r}: {problem}")


def wants_remote(argv: Sequence[str]) -> bool:
    items = list(argv)
    items = items[:items.index("--")] if "--" in items else items
    return any(a.partition("=")[0] in ("--host", "--hosts") for a in items)


def _command_index(rest: list[str], command: str) -> int:
    return rest.index(command)


def _strip_option(tokens: list[str], flag: str) -> list[str]:
    out: list[str] = []
    skip = False
    for tok in tokens:
        if skip:
            skip = False
        elif tok == flag:
            skip = True
        elif not tok.startswith(flag + "="):
            out.append(tok)
    return out


def run_argv(rest: list[str], workload: Path) -> list[str]:
    """``rest`` for the remote: workload path as ``WORKLOAD_SLOT``, no --output/--name."""
    start = _command_index(rest, "run")
    head, tail = rest[:start + 1], rest[start + 1:]
    tail = _strip_option(_strip_option(tail, "--output"), "--name")
    for i, tok in enumerate(tail):
        if not tok.startswith("-") and Path(tok) == workload and (i == 0 or tail[i - 1] not in (
                "--set", "--repeat", "--testbed", "--link-backend")):
            tail[i] = WORKLOAD_SLOT
            break
    return head + tail


def workload_files(args: argparse.Namespace) -> tuple[str, list[Path], list]:
    """The workload's name, the topology files its points reference, and its points."""
    from testbed.loader import parse_assignment
    from testbed.workload import expand_points, load_source, load_workload
    variables = dict(parse_assignment(a) for a in args.assignments)
    source = load_source(args.workload)
    points = expand_points(source, variables, args.repeat)
    loaded = [load_workload(args.workload, p.variables, source=source) for p in points]
    topologies = sorted({wl.topology_path for wl in loaded if wl.topology_path is not None})
    return loaded[0].name, topologies, points


def _run(session: Session, args: argparse.Namespace, rest: list[str]) -> int:
    name, topologies, _ = workload_files(args)
    session.prepare()
    session.doctor()
    instance = args.name or f"r{secrets.token_hex(3)}"
    output = args.output or Path("results")
    outcome = session.run_workload(run_argv(rest, args.workload), workload_file=args.workload,
                                   topology_files=topologies, workload_name=name, output=output,
                                   instance=instance, attached=bool(args.testbed_name))
    for d in outcome.run_dirs:
        print(d)
    return outcome.returncode


def _with_file(session: Session, args: argparse.Namespace, rest: list[str]) -> int:
    session.prepare()
    if args.command == "up" and not args.dry_run:
        session.doctor()
    session_dir = session.new_session_dir()
    mapping = session.ship([Path(args.topology)], session_dir)
    start = _command_index(rest, args.command)
    argv = list(rest)
    for i in range(start + 1, len(argv)):
        if argv[i] == args.topology:
            argv[i] = mapping[Path(args.topology).resolve()]
            break
    try:
        return session.command(argv)
    finally:
        session.remove_remote(session_dir)


def run_single(args: argparse.Namespace, rest: list[str], opts: RemoteOptions) -> int:
    assert opts.host is not None
    session = Session(opts.host, opts)
    try:
        if args.command == "run":
            return _run(session, args, rest)
        if args.command in FILE_COMMANDS and getattr(args, "topology", None):
            return _with_file(session, args, rest)
        if args.command == "doctor":
            session.prepare()
            return session.command(rest)
        return session.command(rest)
    finally:
        session.close()


def main(argv: Sequence[str]) -> int:
    from testbed.cli import build_parser
    verbose = "-v" in argv or "--verbose" in argv
    try:
        opts, rest = split_argv(argv)
        if opts.host and opts.hosts_file:
            raise ConfigError("give either --host or --hosts, not both")
        if opts.remote_python is None:
            opts.remote_python = "python3"
        check_remote_paths(opts)
        args = build_parser().parse_args(rest)
        if opts.hosts_file:
            if args.command != "run":
                raise ConfigError("--hosts spreads a workload's runs over hosts: use it with "
                                  "'run' (for other commands use --host)")
            from testbed.remote.sweep import run_sweep
            return run_sweep(args, rest, opts)
        return run_single(args, rest, opts)
    except TestbedError as exc:
        if verbose:
            traceback.print_exc()
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("testbed: interrupted", file=sys.stderr)
        return 130
