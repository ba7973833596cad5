"""Physical quantities as types: rates, durations, sizes and percentages.

Parsing accepts what tc users write (``100mbit``, ``20ms``, ``1.5MB``,
``0.5%``) and rejects anything ambiguous. Values are kept in base units
(bit/s, seconds, bytes, fraction) so arithmetic never guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = r"(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE](?P<exp>[+-]?[0-9]+))?"

_RATE_UNITS = {
    "bit": 1, "bps": 1,
    "kbit": 1e3, "kbps": 1e3, "mbit": 1e6, "mbps": 1e6,
    "gbit": 1e9, "gbps": 1e9, "tbit": 1e12, "tbps": 1e12,
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


class UnitError(ValueError):
    """A value could not be read as the quantity asked for."""


def _split(text: object, what: str, example: str) -> tuple[float, str]:
    if isinstance(text, bool):
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    if isinstance(text, (int, float)):
        return float(text), ""
    if not isinstance(text, str):
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    m = re.fullmatch(r"\s*(?P<sign>-)?" + _NUMBER + r"\s*(?P<unit>[a-zA-Z%]*)\s*", text)
    if not m:
        raise UnitError(f"expected a {what} such as {example!r}, got {text!r}")
    value = float(m.group("num")) * (10 ** int(m.group("exp")) if m.group("exp") else 1)
    if m.group("sign"):
        value = -value
    return value, m.group("unit").lower()


@dataclass(frozen=True, order=True)
class Rate:
    """A data rate in bits per second."""

    bps: float

    @classmethod
    def parse(cls, text: object) -> "Rate":
        value, unit = _split(text, "rate", "100mbit")
        if unit not in _RATE_UNITS:
            raise UnitError(f"unknown rate unit {unit!r} in {text!r} "
                            f"(use bit, kbit, mbit, gbit)" if unit else
                            f"a rate needs a unit, e.g. '{text}mbit'")
        if value <= 0:
            raise UnitError(f"a rate must be positive, got {text!r}")
        return cls(value * _RATE_UNITS[unit])

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
        return cls(value * _TIME_UNITS[unit])

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
        return cls(int(round(value * _SIZE_UNITS[unit])))

    def __str__(self) -> str:
        for unit, scale in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
            if self.bytes >= scale and self.bytes % (scale // 1000) == 0:
                return f"{self.bytes / scale:g}{unit}"
        return f"{self.bytes}B"


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
        elif not isinstance(text, (int, float)):
            raise UnitError(f"write a percentage with '%', e.g. '{text}%'")
        else:
            # a bare number is read as percent, as tc and netem users write it
            value /= 100.0
        if not 0.0 <= value <= 1.0:
            raise UnitError(f"a percentage must be between 0% and 100%, got {text!r}")
        return cls(value)

    @property
    def percent(self) -> float:
        return self.fraction * 100.0

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%"
