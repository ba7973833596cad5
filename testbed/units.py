"""Physical quantities as types: rates, durations, sizes and percentages.

Parsing accepts what tc users write (``100mbit``, ``20ms``, ``1.5MB``,
``0.5%``) and rejects anything ambiguous. Rates follow tc: ``mbit`` is
megabits per second and ``mbps`` (any case: ``5MBps``) megaBYTES per second,
so ``50mbps`` is 400 Mbit/s. A percentage needs its ``%``: a bare ``0.01``
could be meant as 0.01 % or as the fraction 0.01 (1 %), so only ``0`` may go
without it. Values are kept in base units
(bit/s, seconds, bytes, fraction) so arithmetic never guesses.

Numbers are read as floats (``1e100000000`` is infinite at once, not a
billion-digit integer) and each quantity has a ceiling far above any real
use (``MAX_RATE_BPS``, ``MAX_SECONDS``, ``MAX_BYTES``): a value beyond it,
infinite or NaN is refused with a message, never a traceback later on.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

NUMBER = r"(?P<num>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
MAX_RATE_BPS = 1e15            # 1000 tbit
MAX_SECONDS = 365 * 86400.0    # a year
MAX_BYTES = 10**18             # 1 EB

# as tc reads them: ...bit are bits, ...bps BYTES per second (50mbps is 400 Mbit/s)
_RATE_UNITS = {
    "bit": 1, "bps": 8,
    "kbit": 1e3, "kbps": 8e3, "mbit": 1e6, "mbps": 8e6,
    "gbit": 1e9, "gbps": 8e9, "tbit": 1e12, "tbps": 8e12,
}
_TIME_UNITS = {
    "ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
}
_SIZE_UNITS = {
    "b": 1, "": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
    "k": 1024, "m": 1024**2, "g": 1024**3,  # tc's convention: k = 1024 bytes
}



def _quantity_units() -> dict[str, tuple[str, float]]:
    """Every unit with the kind of quantity it makes, for expressions that carry no
    context (``--assert``, summaries): the tables above, less the letters that mean two
    things (tc's ``m`` is a MiB in a size and a minute in a time) or nothing."""
    kinds = (("rate", _RATE_UNITS), ("time", _TIME_UNITS), ("size", _SIZE_UNITS))
    seen = [u for _kind, table in kinds for u in table]
    table = {u: (kind, float(f)) for kind, units in kinds for u, f in units.items()
             if u and seen.count(u) == 1 and u not in ("k", "g")}
    table["%"] = ("fraction", 0.01)
    return table


QUANTITY_UNITS = _quantity_units()

class UnitError(ValueError):
    """A value could not be read as the quantity asked for."""


def parse_number(text: str) -> float:
    """A plain decimal number (``1.5``, ``.5``, ``2e-3``; no sign, no ``nan`` or ``inf``),
    finite; raises UnitError otherwise."""
    if not re.fullmatch(NUMBER, text):
        raise UnitError(f"expected a number such as 1.5, got {text!r}")
    return _finite(float(text), text)


def _finite(value: float, text: object) -> float:
    if math.isnan(value):
        raise UnitError(f"{text!r} is not a number")
    if math.isinf(value):
        raise UnitError(f"{text!r} is too large")
    return value


def _split(text: object, what: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    if isinstance(text, (int, float)):
        try:
            return _finite(float(text), text), ""
        except OverflowError:          # an integer beyond any float (and too long to show)
            raise UnitError(f"an integer of {text.bit_length()} bits is too large "
                            f"for a {what}") from None
    if not isinstance(text, str):
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    m = re.fullmatch(r"\s*(?P<sign>-)?" + NUMBER + r"\s*(?P<unit>[a-zA-Z%]*)\s*", text)
    if not m:
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    value = _finite(float(m.group("num")), text)
    return (-value if m.group("sign") else value), m.group("unit").lower()


def _at_most(value: float, ceiling: float, text: object, shown: str) -> float:
    if value > ceiling:
        raise UnitError(f"{text!r} is too large: at most {shown}")
    return value


def _rate_unit_error(text: object, unit: str) -> str:
    guess = difflib.get_close_matches(unit, _RATE_UNITS, n=1, cutoff=0.6)
    hint = ""
    if guess:
        kind = "bytes" if guess[0].endswith("ps") else "bits"
        hint = f"did you mean {guess[0]!r} ({kind} per second, as tc reads it)? "
    return (f"unknown rate unit {unit!r} in {text!r}; {hint}use bit, kbit, mbit, gbit for bits "
            f"per second, or bps, kbps, mbps, gbps for bytes per second, as tc does")


@dataclass(frozen=True, order=True)
class Rate:
    """A data rate in bits per second."""

    bps: float

    @classmethod
    def parse(cls, text: object) -> "Rate":
        value, unit = _split(text, "rate", "100mbit")
        if unit not in _RATE_UNITS:
            raise UnitError(_rate_unit_error(text, unit) if unit else
                            f"a rate needs a unit, e.g. '{text}mbit'")
        if value <= 0:
            raise UnitError(f"a rate must be positive, got {text!r}")
        return cls(_at_most(value * _RATE_UNITS[unit], MAX_RATE_BPS, text, "1000tbit"))

    def __str__(self) -> str:
        for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
            if self.bps >= scale:
                return f"{self.bps / scale:g}{unit}"
        return f"{self.bps:g}bit"


@dataclass(frozen=True, order=True)
class Duration:
    """A time span in seconds."""

    seconds: float

    @classmethod
    def parse(cls, text: object, *, allow_zero: bool = True) -> "Duration":
        value, unit = _split(text, "duration", "20ms")
        if unit not in _TIME_UNITS:
            raise UnitError(f"unknown time unit {unit!r} in {text!r} (use us, ms, s)"
                            if unit else f"a duration needs a unit, e.g. '{text}ms'")
        if value < 0 or (value == 0 and not allow_zero):
            raise UnitError(f"a duration must be {'non-negative' if allow_zero else 'positive'}, "
                            f"got {text!r}")
        return cls(_at_most(value * _TIME_UNITS[unit], MAX_SECONDS, text, "a year"))

    @property
    def ms(self) -> float:
        return self.seconds * 1e3

    @property
    def us(self) -> float:
        return self.seconds * 1e6

    def __str__(self) -> str:
        if self.seconds >= 1:
            return f"{self.seconds:g}s"
        if self.seconds >= 1e-3 or self.seconds == 0:
            return f"{self.seconds * 1e3:g}ms"
        return f"{self.seconds * 1e6:g}us"


@dataclass(frozen=True, order=True)
class Size:
    """An amount of data in bytes."""

    bytes: int

    @classmethod
    def parse(cls, text: object) -> "Size":
        value, unit = _split(text, "size", "1500B")
        if unit not in _SIZE_UNITS:
            raise UnitError(f"unknown size unit {unit!r} in {text!r} (use B, KB, MB, KiB, MiB)")
        if value < 0:
            raise UnitError(f"a size must be non-negative, got {text!r}")
        return cls(int(round(_at_most(value * _SIZE_UNITS[unit], MAX_BYTES, text, "1 EB"))))

    def __str__(self) -> str:
        for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
            if self.bytes >= scale and self.bytes % (scale // 1000) == 0:
                return f"{self.bytes / scale:g}{unit}"
        return f"{self.bytes}B"


def _as_percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


@dataclass(frozen=True, order=True)
class Percent:
    """A probability, stored as a fraction in [0, 1]."""

    fraction: float

    @classmethod
    def parse(cls, text: object) -> "Percent":
        value, unit = _split(text, "percentage", "0.5%")
        if unit == "%":
            value /= 100.0
        elif unit:
            raise UnitError(f"unknown unit {unit!r} in {text!r}; write a percentage like '1%'")
        elif value != 0:
            raise UnitError(f"write a percentage with '%': {text!r} could mean '{text}%' "
                            f"or, as a fraction, '{_as_percent(value)}'")
        if not 0.0 <= value <= 1.0:
            raise UnitError(f"a percentage must be between 0% and 100%, got {text!r}")
        return cls(value)

    @property
    def percent(self) -> float:
        return self.fraction * 100.0

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%"
