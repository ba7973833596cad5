"""Writing for people on streams that may go away mid-command.

A reader can leave while testbed still holds namespaces and processes: ``testbed run
... 2>&1 | head`` closes the pipe (EPIPE), a closed terminal window fails every write
(EIO). Neither may stop a teardown. ``write_quietly`` writes progress and messages;
when it fails the stream is ``silence``-d (pointed at /dev/null) and the command
carries on without printing, so nothing later (not Python's final flush either)
fails on it again. testbed leaves SIGPIPE ignored (Python's default) so that a
closed pipe is this error and not a silent death.
"""

from __future__ import annotations

import os
import select
from typing import Any


def write_quietly(stream: Any, data: str | bytes) -> bool:
    """Write ``data`` to ``stream`` and flush (bytes go to its ``buffer``); False, with
    the stream silenced, when that failed."""
    try:
        target = stream.buffer if isinstance(data, bytes) and hasattr(stream, "buffer") \
            else stream
        target.write(data)
        target.flush()
        return True
    except OSError:     # EPIPE, EIO, ENOSPC: printing is not worth a teardown
        silence(stream)
        return False


def say(stream: Any, text: str) -> bool:
    """``text`` as one line on ``stream`` (see ``write_quietly``)."""
    return write_quietly(stream, text + "\n")


def silence(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what it still buffers, and
    whatever is written to it later, goes nowhere instead of failing."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):   # not backed by a descriptor (a test's StringIO)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def reader_gone(stream: Any) -> bool:
    """Whether ``stream`` is a pipe (or socket) whose reading end has been closed."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
