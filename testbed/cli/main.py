"""The ``testbed`` command line: builds the parser, dispatches, reports errors.

Each subcommand lives in a module of this package that registers it with
``set_defaults(func=handler)``; a handler calls the library and prints.
Only ``TestbedError`` is caught: it becomes one line on stderr and a
non-zero exit (``-v`` adds the traceback). Anything else is a bug and shows
its traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from typing import Callable, Sequence

from testbed.cli import compare, info, instance, links, remote, run
from testbed.errors import TestbedError
from testbed.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed", description="Network experiments on real Linux kernel stacks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    remote.add_options(parser)  # --host/--hosts/...: handled in main() before parsing
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    instance.register(sub)
    info.register(sub)
    run.register(sub)
    compare.register(sub)
    links.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # behave like other Unix tools when piped into `head`
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if remote.wants_remote(raw):
        return _reporting(lambda: remote.main(raw, parser), remote.verbose(raw), on_host=True)
    args = parser.parse_args(raw)
    return _reporting(lambda: args.func(args), args.verbose)


def _reporting(call: Callable[[], int], verbose: bool, *, on_host: bool = False) -> int:
    """``call()``'s exit code; a ``TestbedError`` or a signal becomes one line and a code."""
    try:
        return call()
    except TestbedError as exc:
        if verbose:
            traceback.print_exc()
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        if on_host:  # the remote side tears down what it built when its connection ends
            print("testbed: interrupted", file=sys.stderr)
            return 128 + signal.SIGINT
        # realize.build brings in the kernel layer: only once interrupted
        from testbed.realize.build import Terminated
        term = isinstance(exc, Terminated)
        print(f"testbed: {'terminated' if term else 'interrupted'}; what was being built has "
              "been removed", file=sys.stderr)
        return 128 + (signal.SIGTERM if term else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
