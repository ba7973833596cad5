"""The template sandbox with bounds: what a template may build, and for how long.

jinja2's immutable sandbox keeps a template from Python internals, but like
any program a template can still loop long (``range`` is capped at 100,000
items, loops in loops are not) or build a huge value (``"x" * 10**10``,
``9**9**9``). testbed renders files from anyone as root, so:

- ``*`` and ``**`` are checked before they run (jinja2's intercepted binary
  operators): a repeated string or list longer than ``MAX_CHARS`` and a power
  with more than ``MAX_POWER_BITS`` bits are refused;
- the output is built chunk by chunk and refused past ``MAX_CHARS``;
- the render has ``SECONDS`` of wall time (a timer signal, in the main thread,
  where the CLI renders; elsewhere only the size bounds hold).

Each is a ``TemplateBound`` (a SecurityError), reported like any sandbox refusal.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

SECONDS = 10.0
MAX_CHARS = 16 << 20
MAX_POWER_BITS = 1 << 16


class TemplateBound(SecurityError):
    """A template went past one of the bounds."""


def _check_repeat(seq: Any, times: Any) -> None:
    if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
        if len(seq) * times > MAX_CHARS:
            raise TemplateBound(f"'*' would build {len(seq) * times:,} items "
                                f"(templates may build at most {MAX_CHARS:,})")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if base.bit_length() * exponent > MAX_POWER_BITS:
            raise TemplateBound(f"'**' would build a number of about "
                                f"{base.bit_length() * exponent:,} bits "
                                f"(templates may build at most {MAX_POWER_BITS:,})")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with ``*`` and ``**`` checked before they run."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        if operator == "*":
            _check_repeat(left, right)
            _check_repeat(right, left)
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise TemplateBound in the main thread once ``seconds`` have passed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise TemplateBound(f"rendering took longer than {seconds:g} s (a loop too long?)")
    previous = signal.signal(signal.SIGALRM, expired)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:        # someone else's timer: give back what is left of it
            signal.setitimer(signal.ITIMER_REAL,
                             max(0.001, old_delay - (time.monotonic() - started)))


def render(template: jinja2.Template, context: Mapping[str, Any],
           seconds: float = SECONDS) -> str:
    """``template`` rendered within the bounds (TemplateBound past one)."""
    chunks: list[str] = []
    size = 0
    with _deadline(seconds):
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_CHARS:
                raise TemplateBound(f"the rendered file grew past {MAX_CHARS:,} characters")
            chunks.append(chunk)
    return "".join(chunks)
