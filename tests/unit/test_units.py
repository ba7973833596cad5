import re
import subprocess
import sys

import pytest

from testbed.model.impairment import Queue
from testbed.units import Duration, Percent, Rate, Size, UnitError


@pytest.mark.parametrize("text,bps", [("100mbit", 100e6), ("1.5gbit", 1.5e9), ("64kbit", 64e3),
                                      ("1e3bit", 1e3),
                                      ("10Mbps", 80e6), ("5MBps", 40e6), ("1kbps", 8e3)])  # as tc
def test_rate_parses_tc_units(text, bps):
    assert Rate.parse(text).bps == pytest.approx(bps)


@pytest.mark.parametrize("text", ["100", "fast", "-1mbit", "0mbit", "10mbs", True])
def test_rate_rejects(text):
    with pytest.raises(UnitError):
        Rate.parse(text)


@pytest.mark.parametrize("text,seconds", [("20ms", 0.02), ("1.5s", 1.5), ("250us", 250e-6),
                                          ("0ms", 0.0)])
def test_duration(text, seconds):
    assert Duration.parse(text).seconds == pytest.approx(seconds)


def test_duration_rejects_negative_and_unitless():
    with pytest.raises(UnitError, match="non-negative"):
        Duration.parse("-5ms")
    with pytest.raises(UnitError, match="needs a unit"):
        Duration.parse("20")


def test_size_and_percent():
    assert Size.parse("375KB").bytes == 375000
    assert Size.parse("1MiB").bytes == 1 << 20
    assert Percent.parse("0.5%").fraction == pytest.approx(0.005)
    assert Percent.parse(0).fraction == 0.0
    with pytest.raises(UnitError):
        Percent.parse("101%")


def test_str_round_trips():
    for text in ("100mbit", "20ms", "1.5s", "2.5gbit"):
        parsed = Rate.parse(text) if text.endswith("bit") else Duration.parse(text)
        assert str(parsed) == text


@pytest.mark.parametrize("parse, value, message", [
    (Rate.parse, "1e400mbit", "'1e400mbit' is too large"),
    (Rate.parse, "1e10000000mbit", "is too large"),        # took 8 s as an integer power
    (Rate.parse, "2000tbit", "at most 1000tbit"),
    (Rate.parse, float("inf"), "inf is too large"),          # YAML .inf
    (Rate.parse, float("nan"), "nan is not a number"),       # YAML .nan
    pytest.param(Rate.parse, 10**400, "an integer of 1329 bits is too large for a rate",
                 id="400-digit-int"),
    (Duration.parse, "1e300s", "at most a year"),
    (Duration.parse, "400days", "unknown time unit"),
    (Size.parse, "1e30GB", "at most 1 EB"),
    (Percent.parse, float("nan"), "nan is not a number"),
])
def test_absurd_and_non_finite_values_are_refused(parse, value, message):
    with pytest.raises(UnitError, match=re.escape(message)):
        parse(value)


def test_a_huge_exponent_is_refused_at_once():
    """``10 ** 100000000`` as an integer never finished; a float is infinite at once."""
    code = ("from testbed.units import Rate, UnitError\n"
            "try:\n    Rate.parse('1e100000000mbit')\nexcept UnitError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert proc.stdout.strip() == "'1e100000000mbit' is too large"


@pytest.mark.parametrize("value, message", [
    ("nanbdp", "expected a queue size"),
    ("infbdp", "expected a queue size"),
    ("1e400bdp", "'1e400' is too large"),
    ("2e6bdp", "at most 1e+06"),
    ("1_0bdp", "expected a queue size"),
    ("5000000000p", "at most 4294967295 packets"),
])
def test_queue_refuses_what_is_not_a_finite_number(value, message):
    with pytest.raises(UnitError, match=re.escape(message)):
        Queue.parse(value)


def test_small_exponents_still_parse():
    assert Rate.parse("1e3bit").bps == 1e3
    assert Duration.parse("2.5e-3s").seconds == pytest.approx(0.0025)
    assert Queue.parse("1.5e0bdp").bdp == 1.5


@pytest.mark.parametrize("value", [0.01, 1, "0.01", "1"])
def test_a_percentage_without_its_percent_sign_is_refused(value):
    """``--set loss=0.01`` was read as 0.01 % without a word; meant as a fraction it is 1 %."""
    with pytest.raises(UnitError, match=re.escape(f"could mean '{value}%' or, as a fraction")):
        Percent.parse(value)


def test_an_unknown_rate_unit_says_what_it_may_have_meant():
    with pytest.raises(UnitError, match="did you mean 'mbit' .bits per second"):
        Rate.parse("10mbi")
    with pytest.raises(UnitError, match="bps, kbps, mbps, gbps for bytes per second, as tc does"):
        Rate.parse("10mb")
