"""``testbed --host USER@HOST COMMAND ...`` and ``testbed run W.yaml --hosts hosts.yaml``.

``testbed.cli.main.main`` hands the argv here when it holds ``--host`` or
``--hosts``. The remote options are taken out wherever they appear (up to
a ``--``), the rest is parsed by the normal parser (so mistakes are
reported here, before connecting) and then run on the host(s) by
``testbed.remote``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from testbed.cli import options
from testbed.cli.args import path_problem
from testbed.cli.run import check_run_args
from testbed.errors import ConfigError

if TYPE_CHECKING:
    from testbed.remote.session import RemoteOptions, Session
    from testbed.remote.workload import RemoteRun

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
    # remote.session costs ~50 ms (ssh, install): only when --host/--hosts is given
    from testbed.remote.session import RemoteOptions
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


def _before_double_dash(argv: Sequence[str]) -> list[str]:
    items = list(argv)
    return items[:items.index("--")] if "--" in items else items


def wants_remote(argv: Sequence[str]) -> bool:
    return any(a.partition("=")[0] in ("--host", "--hosts") for a in _before_double_dash(argv))


def verbose(argv: Sequence[str]) -> bool:
    """-v/--verbose (read before parsing: errors can come first)."""
    return any(a in ("-v", "--verbose") for a in _before_double_dash(argv))


def check_remote_paths(opts: RemoteOptions) -> None:
    """The remote paths given (they become paths, and one of them a directory testbed
    removes session directories under, as root) are usable, before connecting."""
    for flag in ("--remote-dir", "--remote-testbed", "--remote-python"):
        value = getattr(opts, OPTIONS[flag][0])
        problem = None if value is None else path_problem(value)
        if problem:
            raise ConfigError(f"{flag} {value!r}: {problem}")


def main(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """Parse ``argv`` with the remote options taken out, then run it on the host(s)."""
    opts, rest = split_argv(argv)
    if opts.host and opts.hosts_file:
        raise ConfigError("give either --host or --hosts, not both")
    check_remote_paths(opts)
    args = parser.parse_args(rest)
    if opts.hosts_file and args.command != "run":
        raise ConfigError("--hosts spreads a workload's runs over hosts: use it with "
                          "'run' (for other commands use --host)")
    run = _remote_run(args, rest) if args.command == "run" else None
    if opts.hosts_file:
        assert run is not None
        return _sweep(opts.hosts_file, opts, run)
    assert opts.host is not None
    from testbed.remote.session import Session  # ~50 ms, see split_argv
    session = Session(opts.host, opts)
    try:
        return _run(session, run) if run is not None else _on_host(session, args, rest)
    finally:
        session.close()


def _remote_run(args: argparse.Namespace, rest: list[str]) -> RemoteRun:
    # remote.workload loads workloads (jinja2, yaml: ~0.1 s): only with --host/--hosts
    from testbed.remote.workload import remote_run
    check_run_args(args)
    return remote_run(rest, args.workload, variables=options.variables(args), repeat=args.repeat,
                      output=args.output, instance=args.name, attached=bool(args.testbed_name),
                      selection=options.selection(args))


def _on_host(session: Session, args: argparse.Namespace, rest: list[str]) -> int:
    if args.command in FILE_COMMANDS and getattr(args, "topology", None):
        return _with_file(session, args, rest)
    if args.command == "doctor":
        session.prepare()
    return session.command(rest)


def _run(session: Session, run: RemoteRun) -> int:
    from testbed.remote.workload import run_on  # jinja2, yaml (~0.1 s), see _remote_run
    session.prepare()
    session.doctor()
    outcome = run_on(session, run)
    for d in outcome.run_dirs:
        print(d)
    return outcome.returncode


def _with_file(session: Session, args: argparse.Namespace, rest: list[str]) -> int:
    from testbed.remote.argv import with_file  # imports remote.session (~50 ms), see split_argv
    session.prepare()
    if args.command == "up" and not args.dry_run:
        session.doctor()
    session_dir = session.new_session_dir()
    mapping = session.ship([Path(args.topology)], session_dir)
    try:
        return session.command(with_file(rest, args.command, args.topology,
                                         mapping[Path(args.topology).resolve()]))
    finally:
        session.remove_remote(session_dir)


def _sweep(hosts_file: str, opts: RemoteOptions, run: RemoteRun) -> int:
    from testbed.remote.sweep import run_sweep  # imports remote.session (~50 ms), see split_argv
    sweep = run_sweep(hosts_file, opts, run)
    for note in sweep.notes:
        print(f"testbed: {note}", file=sys.stderr)
    for d in sweep.dirs:
        print(d)
    error = sweep.error()
    if error is not None:
        raise error
    return 0
