"""Time-sequence graphs from a pcap: segments, retransmissions, ACK line, receive
window (scaled as negotiated), SACK blocks; ``testbed plot --tsg``; one clock."""

from __future__ import annotations

import json

import pytest

from testbed.analysis import tsg
from testbed.analysis.runs import load_run
from testbed.analysis.synthetic import FakeFlow, pcap_bytes, write_run
from testbed.cli import main as cli
from testbed.pcapfile import ACK, SYN, TcpPacket, read_tcp

T0 = 1_764_500_000.0        # the run's t0 on the epoch clock
SND, RCV = ("10.0.0.1", 40000), ("10.0.1.1", 5201)
ISN, PEER_ISN = 4294967000, 7          # the sender's sequence wraps past 2**32 at once


def data(t: float, offset: int, n: int = 1000) -> TcpPacket:
    return TcpPacket(T0 + t, *SND, *RCV, (ISN + 1 + offset) % 2**32, PEER_ISN + 1, ACK, 500, n)


def ack(t: float, offset: int, sack: tuple[tuple[int, int], ...] = ()) -> TcpPacket:
    blocks = tuple(((ISN + 1 + a) % 2**32, (ISN + 1 + b) % 2**32) for a, b in sack)
    return TcpPacket(T0 + t, *RCV, *SND, PEER_ISN + 1, (ISN + 1 + offset) % 2**32, ACK, 100, 0,
                     sack=blocks)


PACKETS = [
    TcpPacket(T0 + 1.0, *SND, *RCV, ISN, 0, SYN, 64240, 0, wscale=7),
    TcpPacket(T0 + 1.04, *RCV, *SND, PEER_ISN, ISN + 1, SYN | ACK, 65160, 0, wscale=9),
    data(1.08, 0), data(1.081, 1000), data(1.082, 2000),
    ack(1.12, 1000), ack(1.121, 1000, sack=((2000, 3000),)),      # 1000-2000 lost
    data(1.13, 1000),                                             # its retransmission
    ack(1.17, 3000),
]


def test_pcap_headers_are_read_with_options():
    read = read_tcp(pcap_bytes(PACKETS))
    assert read.problem is None and len(read.packets) == len(PACKETS)
    assert read.packets[0].wscale == 7 and read.packets[1].wscale == 9
    assert read.packets[6].sack == (((ISN + 2001) % 2**32, (ISN + 3001) % 2**32),)
    assert read.packets[2].payload == 1000           # from the IP length: the capture has 128 B
    assert read_tcp(pcap_bytes(PACKETS)[:-10]).problem.startswith("cut short")
    assert read_tcp(b"not a pcap at all, really").problem.startswith("not a pcap")


def test_time_sequence_of_a_loss_and_its_recovery():
    ts = tsg.time_sequence(read_tcp(pcap_bytes(PACKETS)).packets, (*SND, *RCV), zero=T0,
                           clock="run")
    assert ts.segments == [pytest.approx((1.08, 0, 1000)), pytest.approx((1.081, 1000, 2000)),
                           pytest.approx((1.082, 2000, 3000))]
    assert ts.retransmits == [pytest.approx((1.13, 1000, 2000))]
    assert [a for _, a in ts.acks] == [1000, 1000, 3000]
    assert ts.window[0] == pytest.approx((1.12, 1000 + (100 << 9)))   # the receiver's scale
    assert ts.sacks == [pytest.approx((1.121, 2000, 3000))]
    assert ts.syns == pytest.approx([1.0, 1.04])


def _run_with_capture(tmp_path, clock: bool = True):
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("bulk", "cubic", 10e6)])
    (run / "raw" / "capture-r1-eth1.pcap").write_bytes(pcap_bytes(PACKETS))
    if clock:
        manifest = json.loads((run / "manifest.json").read_text())
        manifest["clock"] = {"t0_epoch": T0, "t0_monotonic": 100.0}
        (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_a_flows_connection_is_found_and_put_on_the_run_clock(tmp_path):
    ts = tsg.run_time_sequence(load_run(_run_with_capture(tmp_path)), "bulk")
    assert ts.segments[0][0] == pytest.approx(1.08) and "run's t0" in ts.clock
    older = tsg.run_time_sequence(load_run(_run_with_capture(tmp_path / "old", clock=False)),
                                  "bulk")
    assert older.segments[0][0] == pytest.approx(0.08)        # since the connection's SYN
    assert "first packet" in older.clock


def test_plot_command_writes_a_tsg_png(tmp_path, capsys):
    run = _run_with_capture(tmp_path)
    out = tmp_path / "tsg.png"
    assert cli.main(["plot", str(run), "--flow", "bulk", "--tsg", "--from", "1", "--to", "1.2",
                     "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")
    assert cli.main(["plot", str(run), "-o", str(tmp_path / "ts.png"), "--to", "5"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["--tsg"], "--tsg needs --flow NAME"),
    (["--tsg", "--flow", "nope"], "no flow 'nope' (flows: bulk)"),
    (["--from", "3", "--to", "2"], "--to 2 must be after --from 3"),
])
def test_plot_command_bad_input_is_one_line(tmp_path, capsys, argv, message):
    run = _run_with_capture(tmp_path)
    assert cli.main(["plot", str(run), *argv, "-o", str(tmp_path / "x.png")]) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


def test_handshake_metric_is_syn_to_syn_ack(tmp_path):
    from testbed.analysis import load_runs, summarize
    _run_with_capture(tmp_path)
    row = summarize(load_runs([tmp_path])).rows[0]
    assert row.estimate("handshake").mean == pytest.approx(0.04)


def test_report_shows_the_time_sequence_graph_of_a_captured_flow(tmp_path):
    from testbed.analysis import load_runs, summarize
    from testbed.analysis.report import render_report
    _run_with_capture(tmp_path)
    html = render_report(summarize(load_runs([tmp_path])))
    assert "time-sequence graph of flow bulk" in html
