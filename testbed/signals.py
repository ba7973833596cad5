"""The one policy for stop signals: SIGINT, SIGTERM and SIGHUP end a testbed command
the way Ctrl-C does, tearing down what it made.

- ``stop_signals_raise(make)``: for a block, each stop signal raises ``make(signum)``
  in the main thread (``Terminated`` by default: a KeyboardInterrupt, so rollback code
  that catches BaseException runs). With ``once=True`` only the first raises; a second
  one is reported and ignored, so a teardown already under way is not cut short.
- ``signals_deferred()``: hold the stop signals while rolling back, then raise.

The CLI exits ``128 + signum`` for a stop signal (130, 143, 129), as a shell says.
Outside the main thread signals cannot be handled: both leave them alone there.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, Iterator

from testbed.output import say

# kill(1)'s default, Ctrl-C, and the terminal going away (the window closed, SSH dropped)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A stop signal, raised like Ctrl-C so that rollback runs."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(exc: KeyboardInterrupt) -> int:
    """The signal behind a KeyboardInterrupt (a plain one is Ctrl-C)."""
    return exc.signum if isinstance(exc, Terminated) else signal.SIGINT


@contextlib.contextmanager
def stop_signals_raise(make: Callable[[int], BaseException] = Terminated, *,
                       once: bool = False) -> Iterator[None]:
    """Each stop signal raises ``make(signum)`` for the duration of the block."""
    raised: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if once and raised:
            say(sys.stderr, f"testbed: {signal.Signals(signum).name} again: still stopping "
                "and tearing down, please wait")
            return
        raised.append(signum)
        raise make(signum)
    try:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    except ValueError:        # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold the stop signals while rolling back, so a second Ctrl-C cannot cut it short;
    the first one held is raised (as ``Terminated``) when the block ends."""
    caught: list[int] = []
    try:
        previous = {sig: signal.signal(sig, lambda num, frame: caught.append(num))
                    for sig in STOP_SIGNALS}
    except ValueError:        # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise Terminated(caught[0])
