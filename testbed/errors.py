"""The one exception tree of testbed.

Every error meant for a person derives from ``TestbedError``; the CLI catches
only these, prints one line and exits non-zero. Anything else is a bug and
shows its traceback.
"""

from __future__ import annotations

import signal

# what ends a testbed command the way Ctrl-C does, tearing down what it made: kill(1)'s
# default, and the terminal going away (SIGHUP: the window closed, the SSH session dropped)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class TestbedError(Exception):
    """Base of every error testbed reports to a person."""

    __test__ = False  # keep pytest from collecting this as a test class
    exit_code = 1


class ConfigError(TestbedError):
    """A topology or workload file is wrong. Names the file and YAML path."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None,
                 path: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.path = path
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return _located(self.message, self.file, self.path, self.line)


def _located(message: str, file: str | None, path: str | None, line: int | None = None) -> str:
    """``file:line: path: message``, leaving out what is not known."""
    where = []
    if file:
        where.append(file if line is None else f"{file}:{line}")
    if path:
        where.append(path)
    prefix = ": ".join(where)
    return f"{prefix}: {message}" if prefix else message


class PreflightError(TestbedError):
    """The host lacks something the request needs (privilege, kernel feature, tool)."""

    exit_code = 3


class RealizeError(TestbedError):
    """Changing the kernel failed; what was made has been rolled back."""

    exit_code = 4


class WorkloadError(TestbedError):
    """A workload could not run or failed while running."""

    exit_code = 5


class ResultsError(TestbedError):
    """Run directories that cannot be read or compared: missing, mixed, an unknown schema,
    or a file that is not what ``testbed run`` writes (names the file and the field).

    Its own exit code, so that a script tells "the runs are unreadable" from "an
    assertion failed" (1) and "the command line is wrong" (2).
    """

    exit_code = 7

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.message = message
        self.file = file
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return _located(self.message, self.file, self.path)


class Interrupted(TestbedError):
    """One of ``STOP_SIGNALS`` arrived; raised so that teardown runs."""

    exit_code = 130
