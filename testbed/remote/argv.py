"""The argv a remote ``testbed`` gets: the local one, rewritten.

The local command line is parsed first, here (so that mistakes are reported
before connecting); the remote gets the same argv with the files it names
replaced by their remote copies, and without the options that only mean
something on this side (``--output``, ``--name``: the session sets them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from testbed.remote.session import WORKLOAD_SLOT

# options (of the commands sent to a remote) that take a value: the token after one is no file
VALUE_OPTIONS = ("--set", "--repeat", "--testbed", "--link-backend", "--name", "--output",
                 "--point", "--index", "--shard", "--shards", "--expect-matrix")
# a sweep worker's selectors: the sweep picks each remote run's point itself
SELECTORS = ("--point", "--index", "--shard", "--shards")


def strip_option(tokens: list[str], flag: str) -> list[str]:
    """``tokens`` without ``flag VALUE`` and ``flag=VALUE``."""
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


def _replace_argument(tokens: list[str], start: int, is_it: Callable[[str], bool],
                      new: str) -> list[str]:
    """``tokens`` with the first positional argument from ``start`` on that ``is_it`` replaced."""
    out = list(tokens)
    for i in range(start, len(out)):
        if not out[i].startswith("-") and is_it(out[i]) and \
                (i == 0 or out[i - 1] not in VALUE_OPTIONS):
            out[i] = new
            break
    return out


def run_argv(rest: list[str], workload: Path) -> list[str]:
    """``rest`` for the remote: workload path as ``WORKLOAD_SLOT``, no --output/--name."""
    start = rest.index("run") + 1
    head, tail = rest[:start], strip_option(strip_option(rest[start:], "--output"), "--name")
    return head + _replace_argument(tail, 0, lambda tok: Path(tok) == workload, WORKLOAD_SLOT)


def strip_flag_with_optional_value(tokens: list[str], flag: str) -> list[str]:
    """``tokens`` without ``flag``, ``flag=VALUE`` and ``flag VAR`` (``--point-from-env``'s
    optional environment variable name: upper case, digits, underscores)."""
    out: list[str] = []
    skip = False
    for tok in tokens:
        if skip and re.fullmatch(r"[A-Z_][A-Z0-9_]*", tok):
            skip = False
            continue
        skip = tok == flag
        if not skip and not tok.startswith(flag + "="):
            out.append(tok)
    return out


def point_argv(base: list[str], point: Any) -> list[str]:
    """The remote run argv for one run: the base (its --set and --repeat, so the remote
    expands the same matrix and records it) with ``--point ID`` instead of any selector."""
    out = strip_flag_with_optional_value(base, "--point-from-env")
    for flag in SELECTORS:
        out = strip_option(out, flag)
    return out + ["--point", point.id]


def with_file(rest: list[str], command: str, local: str, remote: str) -> list[str]:
    """``rest`` with the file argument ``local`` of ``command`` replaced by ``remote``."""
    return _replace_argument(rest, rest.index(command) + 1, lambda tok: tok == local, remote)
