"""Errors of remote operation. Each says what happened and what to do.

Kept apart from ``testbed.errors`` so that the remote feature stays one
package; every class still derives from ``TestbedError``, so the CLI prints
it as one line and exits non-zero.
"""

from __future__ import annotations

from testbed.errors import TestbedError


class RemoteError(TestbedError):
    """Something about the remote host or the SSH connection to it failed."""

    exit_code = 6


class ConnectFailed(RemoteError):
    """No TCP connection (refused, unreachable, timed out, unknown name)."""


class AuthFailed(RemoteError):
    """SSH authentication was refused."""


class HostKeyError(RemoteError):
    """The host key is unknown (without --trust-new-host-key) or does not match."""


class ConnectionLost(RemoteError):
    """The connection dropped while a command ran."""


class RemoteUnfit(RemoteError):
    """The remote lacks what testbed needs (doctor failed, no python3, sudo needs a password)."""


class UnsafeRemoteName(RemoteError):
    """The remote listed a file whose name would land outside the local directory it
    is copied into (``..``, ``/``, ``.``, NUL, a local symlink): nothing of it is written."""


class RemoteCommandFailed(RemoteError):
    """A remote testbed command exited non-zero; its own message was shown above."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode
