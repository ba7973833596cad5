import pytest

from testbed.units import Duration, Percent, Rate, Size, UnitError


@pytest.mark.parametrize("text,bps", [("100mbit", 100e6), ("1.5gbit", 1.5e9), ("64kbit", 64e3),
                                      ("10Mbps", 10e6), ("1e3bit", 1e3)])
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
    assert Percent.parse(1).fraction == pytest.approx(0.01)
    with pytest.raises(UnitError):
        Percent.parse("101%")


def test_str_round_trips():
    for text in ("100mbit", "20ms", "1.5s", "2.5gbit"):
        parsed = Rate.parse(text) if text.endswith("bit") else Duration.parse(text)
        assert str(parsed) == text
