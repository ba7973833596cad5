"""Argument types for names and paths given on the command line.

Used as argparse ``type=`` so that every option taking an instance name or an
output directory is checked the same way, before any command (local or over
``--host``) starts: a bad value is one usage error naming the option, exit 2,
and nothing is created, read or removed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from testbed.errors import ConfigError
from testbed.files import NAME_MAX


def instance_name(text: str) -> str:
    """An instance name: the rule ``up`` applies (``check_instance_name``)."""
    # model.topology brings jinja2 and yaml (~0.1 s): not on the path of --help
    from testbed.model.topology import check_instance_name
    try:
        return check_instance_name(text, "")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MAX_REPEAT = 10_000


def repetitions(text: str) -> int:
    """``--repeat``: a whole number from 1 to MAX_REPEAT (a billion made the matrix grow
    without end before anything ran)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_REPEAT:
        raise argparse.ArgumentTypeError(f"{value} repetitions: give 1 to {MAX_REPEAT}")
    return value


def output_dir(text: str) -> Path:
    """A directory for results: any path the user may choose, but not an empty one,
    one with control characters (run directories are printed one per line), one
    with an over-long component, or an existing file."""
    problem = path_problem(text)
    if problem is None and Path(text).exists() and not Path(text).is_dir():
        problem = "it exists and is not a directory"
    if problem:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be a results directory: {problem}")
    return Path(text)


def path_problem(text: str) -> str | None:
    """Why ``text`` is not a usable path, or None."""
    if not text:
        return "it is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "it holds a control character (a newline, a tab, ...)"
    if any(len(part.encode()) > NAME_MAX for part in text.split("/")):
        return f"a part of it is longer than {NAME_MAX} bytes"
    return None
