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

from testbed.cli import compare, info, instance, kernels, links, plot, remote, run, sweep
from testbed.errors import TestbedError
from testbed.output import reader_gone, say, silence
from testbed.signals import signum_of
from testbed.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed", description="Network experiments on real Linux kernel stacks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    parser.add_argument("--version", action="version", version=f"testbed {__version__}")
    remote.add_options(parser)  # --host/--hosts/...: handled in main() before parsing
    kernels.add_options(parser)  # --kernel/--vcpus/...: the same
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    instance.register(sub)
    info.register(sub)
    run.register(sub)
    sweep.register(sub)
    compare.register(sub)
    links.register(sub)
    kernels.register(sub)
    plot.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # SIGPIPE stays ignored (Python's default): `testbed run ... | head` must not kill a run
    # that holds namespaces; a closed stdout is a BrokenPipeError instead (testbed.output)
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if kernels.wants_kernels(raw):
            code = _reporting(lambda: kernels.main(raw, parser), remote.verbose(raw))
        elif remote.wants_remote(raw):
            code = _reporting(lambda: remote.main(raw, parser), remote.verbose(raw), on_host=True)
        else:
            args = parser.parse_args(raw)
            code = _reporting(lambda: args.func(args), args.verbose)
        sys.stdout.flush()      # a closed stdout shows here, not in Python's final flush
        return code
    except BrokenPipeError:
        if not reader_gone(sys.stdout):
            raise
        # stdout's reader left (`| head`) after the work was done: stop quietly, as a tool
        # killed by SIGPIPE would
        silence(sys.stdout)
        return 128 + signal.SIGPIPE


def _reporting(call: Callable[[], int], verbose: bool, *, on_host: bool = False) -> int:
    """``call()``'s exit code; a ``TestbedError`` or a stop signal becomes one line and a code."""
    try:
        return call()
    except TestbedError as exc:
        if verbose:
            traceback.print_exc()
        say(sys.stderr, f"testbed: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = signum_of(exc)
        if on_host:  # the remote side tears down what it built when its connection ends
            say(sys.stderr, "testbed: interrupted")
            return 128 + signum
        how = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}.get(
            signum, f"terminated by {signal.Signals(signum).name}")
        say(sys.stderr, f"testbed: {how}; what was being built has been removed")
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
