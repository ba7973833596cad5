"""The progress line of ``testbed run``: rewritten in place on a terminal, plain lines otherwise."""

import io

from testbed.run.progress import ProgressLine


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    line = ProgressLine(True, [10.0, 10.0], stream=out)
    line.begin_point(0, "cubic-vs-bbr mix=shared")
    assert line.due(0.0) and line.interval == 5.0
    line.show(line.started + 3, 2.0, {"cubic": 2.6e6, "bbr": 86.6e6}, 2)
    assert not line.due(line.started + 4)
    text = out.getvalue()
    assert "\r" not in text
    assert "testbed: [1/2] cubic-vs-bbr mix=shared\n" in text
    assert "t=2/10s" in text and "elapsed 0:03 of ~0:32" in text    # 2 x (10 s + 6 s guessed)
    assert "Mbit/s: cubic 2.6  bbr 86.6" in text and "2 running" in text


def test_terminal_line_is_rewritten_and_cleared_before_messages():
    out = Tty()
    line = ProgressLine(True, [4.0], stream=out)
    line.begin_point(0, "p")
    line.show(line.started + 1, 1.0, {}, 1)
    line.show(line.started + 1.5, 1.5, {"a": 1e9}, 1)
    line.message("tearing down")
    text = out.getvalue()
    assert text.count("\r[1/1] p") == 2 and "a 1.00G" in text
    cleared = text[:-len("testbed: tearing down\n")]
    assert text.endswith("testbed: tearing down\n") and cleared.endswith(" \r")  # line wiped first


def test_expected_time_learns_the_overhead_and_disabled_prints_nothing():
    out = io.StringIO()
    line = ProgressLine(False, [1.0, 1.0, 1.0], stream=out)
    line.begin_point(0, "p")
    line._point_started -= 3.0        # the first point took 3 s for 1 s of traffic
    line.end_point()
    assert 8.9 < line.expected_total() < 9.5       # 3 x (1 s + ~2 s)
    line.message("x")
    assert out.getvalue() == "" and not line.due(0.0)
