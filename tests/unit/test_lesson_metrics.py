"""The metrics the lessons' --asserts use, on tcp_info samples with known answers."""

from __future__ import annotations

import pytest

from testbed.analysis import load_runs, summarize
from testbed.analysis import metrics as m
from testbed.analysis.synthetic import FakeFlow, write_run
from testbed.analysis.verdicts import check_assertions
from testbed.results import TCPINFO_COLUMNS, write_table


def slow_start_then_sawtooth() -> list[dict]:
    """cwnd waits 80 ms for the first ACK, doubles every 40 ms RTT for 0.3 s, then three
    halvings (two in recovery)."""
    rows = [{"t": -0.08 + k * 0.01, "cwnd": 10, "ssthresh": None, "ca_state": "open"}
            for k in range(8)]
    for k in range(31):
        t = k * 0.01
        rows.append({"t": t, "cwnd": round(10 * 2 ** (t / 0.04)), "ssthresh": None,
                     "ca_state": "open"})
    for k, (cwnd, ssthresh, state) in enumerate([(400, 200, "recovery"), (200, 200, "open"),
                                                 (250, 200, "open"), (125, 125, "recovery"),
                                                 (150, 125, "open"), (75, 75, "open")]):
        rows.append({"t": 0.31 + k * 0.01, "cwnd": cwnd, "ssthresh": ssthresh, "ca_state": state})
    for r in rows:
        r.update({"flow": "f", "node": "h1", "sport": 1, "state": "ESTABLISHED",
                  "srtt_us": 40000, "bytes_acked": int(r["t"] * 1e6), "snd_wnd": 50000,
                  "busy_time_us": 1000, "rwnd_limited_us": 800})
    return rows


def test_slow_start_growth_is_doubling_per_rtt():
    assert m.slow_start_growth(slow_start_then_sawtooth()) == pytest.approx(2.0, rel=0.05)
    assert m.slow_start_growth(slow_start_then_sawtooth()[:2]) is None     # too short to tell




def test_lesson_assertions_read_the_senders_socket(tmp_path):
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "reno", 10e6)])
    receiver = [{**r, "node": "h3", "sport": 5201, "bytes_acked": 0, "snd_wnd": 10**6}
                for r in slow_start_then_sawtooth()]
    write_table(slow_start_then_sawtooth() + receiver, ("flow",) + TCPINFO_COLUMNS,
                run / "tcp_info.csv")
    summary = summarize(load_runs([tmp_path]))
    row = summary.rows[0]
    assert row.estimate("window_ratio").mean == pytest.approx(1.0)   # 10 Mbit/s = 50 KB / 40 ms
    assert row.estimate("rwnd_limited").mean == pytest.approx(0.8)
    assert row.estimate("recoveries").mean == 2 and row.estimate("rtos").mean == 0
    assert row.estimate("cwnd_cuts").mean == 2
    verdicts = check_assertions(summary, ["ss_growth[flow=f] > 1.5", "cwnd_cuts[flow=f] >= 2",
                                          "recoveries[flow=f] >= 1", "rtos[flow=f] < 1",
                                          "rwnd_limited[flow=f] > 50%",
                                          "window_ratio[flow=f] < 1.4"])
    assert [v.passed for v in verdicts] == [True] * 6, [v.message for v in verdicts]
