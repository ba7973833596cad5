"""The HTML report and its plots, from synthetic run directories."""

from __future__ import annotations

import base64
import io
import re

import pytest

from testbed.cli import main as cli
from testbed.analysis import load_runs, summarize
from testbed.analysis import plots, report
from testbed.analysis.metrics import RunView, socket_history
from testbed.analysis.report import render_report
from testbed.analysis.synthetic import FakeFlow, write_run


@pytest.fixture
def sweep(tmp_path):
    base = tmp_path / "results" / "loss-sweep"
    for cc, rates in (("cubic", (95, 40, 8)), ("bbr", (95, 93, 90))):
        for loss, mbit in zip(("0%", "0.1%", "1%"), rates):
            for rep in range(2):
                write_run(base, f"{cc}-{loss}-{rep}", workload="loss-sweep", repetition=rep,
                          variables={"cc": cc, "loss": loss},
                          flows=[FakeFlow("bulk", cc, (mbit + rep) * 1e6, rtt_ms=110, min_rtt_ms=100)])
    write_run(base, "hot", workload="loss-sweep", suspect=True, variables={"cc": "bbr", "loss": "0%"},
              flows=[FakeFlow("bulk", "bbr", 1e6)])
    return base


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_is_self_contained_with_plots_and_manifests(sweep):
    html = render_report(summarize(load_runs([sweep])))
    images = _pngs(html)
    # metrics against cc and against loss, throughput-delay, RTT CDF + a time series per group (6)
    assert len(images) == 4 + 6
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in images)
    assert "Metrics against loss" in html and "RTT CDF" in html
    # no external resource: nothing to fetch when offline
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<script" not in html
    # the manifest of each run, and what was left out
    assert html.count("link backend userspace") == 12
    assert "6.0-synthetic" in html
    assert "Left out" in html and "hot" in html and "host CPU saturated" in html
    assert "<td>90.50 ± 6.35</td>" in html  # bbr 1%: 90, 91 Mbit/s; t(0.975,1) * 0.5


def test_report_escapes_what_runs_contain(tmp_path):
    write_run(tmp_path, "r", variables={"note": "<script>alert(1)</script>"},
              flows=[FakeFlow("<b>x</b>", "bbr", 1e6)])
    html = render_report(summarize(load_runs([tmp_path])))
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_plot_pixels_show_the_data(sweep):
    from PIL import Image
    s = summarize(load_runs([sweep]))
    png = plots.loss_sweep(s)
    assert png is not None
    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 24)}
    assert (0x1f, 0x77, 0xb4) in colours and (0xd6, 0x27, 0x28) in colours  # one line per cc
    assert plots.loss_sweep(summarize(load_runs([sweep / "bbr-0%-0"]))) is None  # no loss dimension


def test_throughput_series_from_tcp_info(tmp_path):
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "bbr", 40e6, seconds=10)])
    view = RunView(load_runs([run]).runs[0])
    series = plots.throughput_series(view, bin_s=1.0)["f"]
    # samples every 0.1 s from 0.1 to 10 s: bytes acked grow 40 Mbit/s; the first bin misses one delta
    assert [round(v / 1e6, 3) for _, v in series[1:9]] == [40.0] * 8


def test_report_command_writes_html_and_pngs(sweep, tmp_path, capsys):
    out = tmp_path / "out" / "report.html"
    assert cli.main(["report", str(sweep), "-o", str(out), "--png-dir", str(tmp_path / "png")]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert len(list((tmp_path / "png").glob("*.png"))) == 10


@pytest.mark.parametrize("value", ["$x^{$", "a$b$c", r"$\frac{1}{$", "50$"])
def test_dollar_signs_in_variables_and_names_are_shown_as_text(tmp_path, value):
    """matplotlib reads text between two '$' as mathtext: a variable, flow or workload
    with them broke the report (ValueError at savefig) or turned into formulas."""
    base = tmp_path / "runs"
    for loss in ("0%", "1%"):
        write_run(base, f"r{loss}", workload=f"w{value}", variables={"cc": value, "loss": loss},
                  flows=[FakeFlow(f"f{value}", value, 50e6)])
    out = tmp_path / "report.html"
    assert cli.main(["report", str(base), "-o", str(out), "--by", "cc"]) == 0
    assert len(_pngs(out.read_text())) == 5     # loss sweep, delay, CDF, two time series
    fig = plots._figure(1.0)
    with plots.plain_text():
        label = fig.subplots().set_title(value)
    assert label.get_parse_math() is False


def test_report_does_not_follow_a_planted_temporary_symlink(sweep, tmp_path):
    """The report was written to OUTPUT.tmp, then renamed: a symlink planted there (by
    another user, in /tmp) made a root testbed overwrite its target."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out = tmp_path / "rep.html"
    (tmp_path / "rep.html.tmp").symlink_to(victim)
    assert cli.main(["report", str(sweep), "-o", str(out)]) == 0
    assert victim.read_text() == "precious"
    assert out.read_text().startswith("<!DOCTYPE html>") or "<html" in out.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep.html", "rep.html.tmp",
                                                            "results", "victim"]


def test_report_into_a_directory_is_one_error(sweep, tmp_path, capsys):
    target = tmp_path / "dir"
    target.mkdir()
    assert cli.main(["report", str(sweep), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err
    assert list(target.iterdir()) == []


def test_throughput_is_not_doubled_by_sampling_gaps_at_bin_edges(tmp_path):
    """A 50 Mbit/s flow read ~98 Mbit/s in the bin where a late sample landed."""
    from testbed.results import TCPINFO_COLUMNS, write_table
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "cubic", 50e6)])
    times = [0.0, 0.09, 0.11, 0.19, 0.41, 0.42, 0.61, 0.79, 0.81, 1.0]   # gaps and edge samples
    rows = [{"flow": "f", "t": t, "sport": 1, "state": "ESTABLISHED", "bytes_acked": int(50e6 / 8 * t)}
            for t in times]
    write_table(rows, ("flow",) + TCPINFO_COLUMNS, run / "tcp_info.csv")
    series = plots.throughput_series(RunView(load_runs([run]).runs[0]), bin_s=0.1)["f"]
    assert [round(v / 1e6) for _, v in series] == [50] * 10


def test_palette_tells_many_groups_apart():
    assert plots.palette(3) == list(plots.COLORS[:3])
    for n in (20, 25, 60):
        assert len(set(plots.palette(n))) == n


def test_report_plots_each_metric_against_each_swept_variable_per_cc(tmp_path):
    """A shared sweep over queue: one line per cc, share and Jain included."""
    for q, bbr in (("1bdp", 30e6), ("4bdp", 20e6), ("16bdp", 10e6)):
        for rep in range(2):
            write_run(tmp_path, f"q{q}-{rep}", variables={"queue": q, "rate": "50mbit"}, repetition=rep,
                      flows=[FakeFlow("bbr", "bbr", bbr), FakeFlow("cubic", "cubic", 45e6 - bbr)])
    s = summarize(load_runs([tmp_path]))
    assert [r.labels["queue"] for r in s.rows][::2] == ["1bdp", "4bdp", "16bdp"]   # not as text
    from PIL import Image
    png = plots.metric_sweep(s, "queue")
    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 24)}
    assert (0x1f, 0x77, 0xb4) in colours and (0xd6, 0x27, 0x28) in colours  # bbr and cubic lines
    assert img.height > 4 * 200                     # goodput, share, rtt_p95, jain panels
    html = report.render_report(s)
    assert "Metrics against queue" in html
    assert plots.metric_sweep(s, "rate") is None       # not swept


def _teaching_run(tmp_path):
    """One flow: slow start, a loss (recovery, a retransmission), a schedule action at 0.5 s."""
    import json
    from testbed.results import TCPINFO_COLUMNS, write_table
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "cubic", 10e6)])
    rows = []
    for k in range(100):
        t = k * 0.01
        state = "recovery" if 50 <= k < 55 else "open"
        rows.append({"flow": "f", "t": t, "sport": 1, "state": "ESTABLISHED", "ca_state": state,
                     "cwnd": 10 + k if k < 50 else 30, "ssthresh": None if k < 50 else 30,
                     "srtt_us": 40000, "min_rtt_us": 40000, "pacing_rate_bps": 20e6,
                     "bytes_acked": int(10e6 / 8 * t), "total_retrans": 0 if k < 51 else 1})
    write_table(rows, ("flow",) + TCPINFO_COLUMNS, run / "tcp_info.csv")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["link_schedule"] = [{"link": "r1-r2", "set": "loss 100%", "at_s": 0.5,
                                  "action": "set"}]
    (run / "manifest.json").write_text(json.dumps(manifest))
    return RunView(load_runs([run]).runs[0])


def test_time_series_mark_retransmissions_state_changes_and_schedule_events(tmp_path):
    from PIL import Image
    view = _teaching_run(tmp_path)
    history = socket_history(view.run, view.run.tcp_info())
    assert history.source == "tcp_info"
    assert history.retransmissions == [pytest.approx(0.51)]
    assert history.ca_changes == [(pytest.approx(0.5), "recovery"), (pytest.approx(0.55), "open")]
    assert plots.schedule_events(view) == [(0.5, "r1-r2: loss 100%")]
    img = Image.open(io.BytesIO(plots.timeseries(view, "t"))).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 24)}
    assert (0xd6, 0x27, 0x28) in colours          # the retransmission's x
    assert (0xff, 0x7f, 0x0e) in colours          # the entry into recovery
    assert (0x55, 0x55, 0x55) in colours          # the schedule action's line


def test_report_zooms_its_time_series(tmp_path, capsys):
    _teaching_run(tmp_path)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(tmp_path / "r"), "-o", str(out), "--from", "0.4",
                     "--to", "0.6"]) == 0
    assert cli.main(["report", str(tmp_path / "r"), "-o", str(out), "--from", "0.6",
                     "--to", "0.4"]) == 2
    assert "--to 0.4 must be after --from 0.6" in capsys.readouterr().err


def test_kernel_events_are_preferred_to_samples_when_recorded(tmp_path):
    """tcp_info at 10 ms misses a recovery shorter than that; tcp_events.csv has each one."""
    from testbed.collect.tcpevents_parse import CSV_COLUMNS
    from testbed.results import write_table
    view = _teaching_run(tmp_path)
    key = {"src": "10.0.0.1", "sport": 1, "dst": "10.0.1.1", "dport": 5201}
    rows = [{**r, **key} for r in view.run.tcp_info()]
    events = [{"t": 0.301, "event": "retransmit_skb", **key},
              {"t": 0.302, "event": "cong_state_set", "ca_state": "recovery", **key},
              {"t": 0.305, "event": "cong_state_set", "ca_state": "open", **key},
              {"t": 0.4, "event": "retransmit_skb", **{**key, "sport": 2}}]   # another socket
    write_table(events, CSV_COLUMNS, view.run.path / "tcp_events.csv")
    history = socket_history(view.run, rows)
    assert history.source == "tcp_events"
    assert history.retransmissions == [0.301]
    assert history.ca_changes == [(0.302, "recovery"), (0.305, "open")]


def test_report_all_runs_shows_every_runs_time_series(sweep, tmp_path):
    first = report.render_report(summarize(load_runs([sweep])))
    every = report.render_report(summarize(load_runs([sweep])), every_run=True)
    assert len(_pngs(every)) == len(_pngs(first)) + 6      # 12 runs in 6 groups
    assert cli.main(["report", str(sweep), "-o", str(tmp_path / "r.html"), "--all-runs"]) == 0
