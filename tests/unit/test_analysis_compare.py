"""Comparison of synthetic run directories with known answers, and the CLI
around it (tables, formats, exclusions, assertions, JUnit, bad input)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

import pytest

from testbed.cli import main as cli
from testbed.analysis import load_runs, summarize
from testbed.analysis.runs import ResultsError
from testbed.analysis.synthetic import FakeFlow, write_run
from testbed.analysis.verdicts import check_assertions
from testbed.errors import ConfigError, TestbedError

T2 = 4.302652729749464  # t(0.975, 2)


@pytest.fixture
def sweep(tmp_path):
    """cc x loss, 3 repetitions each; BBR near the rate, CUBIC collapsing with loss."""
    base = tmp_path / "results" / "loss-sweep"
    goodput = {("bbr", "0%"): 90, ("bbr", "1%"): 85, ("cubic", "0%"): 90, ("cubic", "1%"): 5}
    for (cc, loss), mbit in goodput.items():
        for rep, delta in enumerate((-1, 0, 1)):
            write_run(base, f"{cc}-{loss}-{rep}", workload="loss-sweep", repetition=rep,
                      variables={"rate": "100mbit", "cc": cc, "loss": loss},
                      flows=[FakeFlow("bulk", cc, (mbit + delta) * 1e6, rtt_ms=50, min_rtt_ms=40,
                                      retrans_fraction=0.01)])
    return base


def compare(*argv: str) -> int:
    return cli.main(["compare", *argv])


def test_groups_by_the_varying_variables_with_t_intervals(sweep):
    s = summarize(load_runs([sweep]))
    assert s.dims == ["cc", "loss"]
    assert [r.labels for r in s.rows] == [{"cc": "bbr", "loss": "0%"}, {"cc": "bbr", "loss": "1%"},
                                          {"cc": "cubic", "loss": "0%"}, {"cc": "cubic", "loss": "1%"}]
    est = s.rows[3].estimate("goodput")
    assert est.n == 3 and est.mean == pytest.approx(5e6)
    # values 4, 5, 6 Mbit/s: s = 1 Mbit/s, half width = t(0.975, 2) / sqrt(3)
    assert est.ci_high - est.mean == pytest.approx(T2 * 1e6 / math.sqrt(3))


def test_known_metric_values(sweep):
    row = summarize(load_runs([sweep])).rows[0]
    assert row.estimate("rtt_p50").mean == pytest.approx(0.050)
    assert row.estimate("rtt_p99").mean == pytest.approx(0.050)
    assert row.estimate("qdelay_p50").mean == pytest.approx(0.010)
    assert row.estimate("retrans").mean == pytest.approx(0.01 / 1.01, rel=1e-3)
    assert row.estimate("utilisation").mean == pytest.approx(0.90)
    assert row.estimate("fct").mean == pytest.approx(10.0)
    assert row.estimate("backlog_p95").mean == pytest.approx(10000)
    assert row.estimate("jain").mean is None          # one flow: fairness undefined
    assert row.estimate("udp_loss").mean is None      # TCP only


@pytest.mark.parametrize("rates, expected", [((50e6, 50e6), 1.0), ((25e6, 75e6), 0.8),
                                             ((30e6, 30e6, 30e6), 1.0), ((90e6, 0.0), 0.5)])
def test_jain_fairness_of_flows_sharing_the_bottleneck(tmp_path, rates, expected):
    flows = [FakeFlow(f"f{i}", "cubic", r) for i, r in enumerate(rates)]
    write_run(tmp_path, "shared", variables={"mix": "shared"}, flows=flows)
    s = summarize(load_runs([tmp_path]))
    assert s.rows[0].estimate("jain").mean == pytest.approx(expected)
    assert s.rows[0].estimate("goodput").mean == pytest.approx(sum(rates))


def test_by_cc_splits_a_shared_run(tmp_path):
    write_run(tmp_path, "shared", variables={"mix": "shared"},
              flows=[FakeFlow("a", "cubic", 10e6), FakeFlow("b", "bbr", 80e6)])
    s = summarize(load_runs([tmp_path]), by=["cc"])
    assert [(r.labels, r.estimate("goodput").mean) for r in s.rows] == [
        ({"cc": "bbr"}, 80e6), ({"cc": "cubic"}, 10e6)]
    with pytest.raises(ConfigError, match="--by nope"):
        summarize(load_runs([tmp_path]), by=["nope"])


def test_significance_between_groups(tmp_path):
    for rep in range(4):
        for cc, mbit in (("bbr", 80 + rep), ("cubic", 10 + rep)):
            write_run(tmp_path, f"{cc}{rep}", variables={"cc": cc}, flows=[FakeFlow("f", cc, mbit * 1e6)])
    (c,) = summarize(load_runs([tmp_path])).comparisons("goodput")
    assert c.key == "cc" and c.test is not None
    assert c.test.p_value == pytest.approx(2 / 70) and c.test.significant()


def test_suspect_and_partial_runs_are_excluded_and_counted(sweep, capsys):
    write_run(sweep, "suspect", workload="loss-sweep", suspect=True,
              variables={"rate": "100mbit", "cc": "bbr", "loss": "0%"}, flows=[FakeFlow("bulk", "bbr", 1e6)])
    write_run(sweep, "partial", workload="loss-sweep", status="interrupted",
              variables={"rate": "100mbit", "cc": "bbr", "loss": "0%"}, flows=[FakeFlow("bulk", "bbr", 1e6)])
    rs = load_runs([sweep])
    assert (len(rs.runs), len(rs.excluded_suspect), len(rs.excluded_partial)) == (12, 1, 1)
    assert len(load_runs([sweep], include_suspect=True).runs) == 13
    assert len(load_runs([sweep], include_suspect=True, include_partial=True).runs) == 14
    assert compare(str(sweep), "--format", "markdown") == 0
    out = capsys.readouterr().out
    assert "12 of 14 runs" in out and "1 suspect" in out and "1 partial" in out


def test_all_suspect_is_an_error_that_says_what_to_do(tmp_path):
    write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "bbr", 1e6)], suspect=True)
    with pytest.raises(ResultsError, match="--include-suspect"):
        load_runs([tmp_path])


def test_formats(sweep, capsys):
    assert compare(str(sweep), "--format", "csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cc,loss,n,goodput_mean,goodput_ci_low,goodput_ci_high,")
    assert lines[4].startswith("cubic,1%,3,5000000.0,")
    assert compare(str(sweep), "--format", "json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dimensions"] == ["cc", "loss"] and len(data["groups"]) == 4
    assert data["groups"][0]["metrics"]["goodput"]["values"] == [89e6, 90e6, 91e6]
    assert "Student t" in data["ci_method"]
    assert any(c["differs_in"] == "cc" and c["a"] == {"cc": "bbr", "loss": "1%"} for c in data["comparisons"])
    assert compare(str(sweep), "--format", "markdown", "--metrics", "goodput,rtt_p50") == 0
    md = capsys.readouterr().out
    assert "| cc | loss | n | goodput (Mbit/s) | rtt_p50 (ms) |" in md
    assert "| cubic | 1% | 3 | 5.00 ± 2.48 | 50.0 ± 0.0 |" in md
    assert compare(str(sweep)) == 0
    table = capsys.readouterr().out
    assert "85.00 ± 2.48" in table and "Mann-Whitney" in table


def test_assertions_and_junit(sweep, tmp_path, capsys):
    junit = tmp_path / "out.xml"
    rc = compare(str(sweep), "--format", "csv",
                 "--assert", "goodput[cc=bbr,loss=1%] > 2 * goodput[cc=cubic,loss=1.0%]",
                 "--assert", "goodput[cc=cubic,loss=1%] > 50mbit",
                 "--assert", "rtt_p99[cc=bbr,loss=0%] < 100ms", "--junit", str(junit))
    assert rc == 1
    err = capsys.readouterr().err
    assert "PASS: goodput[cc=bbr,loss=1%] > 2 *" in err and "FAIL: goodput[cc=cubic,loss=1%] > 50mbit" in err
    root = ET.parse(junit).getroot()
    cases = root.findall("./testsuite/testcase")
    assert [c.get("name") for c in cases][1] == "goodput[cc=cubic,loss=1%] > 50mbit"
    assert [c.find("failure") is not None for c in cases] == [False, True, False]
    assert root.find("testsuite").get("failures") == "1"
    assert compare(str(sweep), "--format", "csv", "--assert", "goodput_lo[cc=bbr,loss=1%] > "
                   "goodput_hi[cc=cubic,loss=1%]", "--assert", "goodput_n[cc=bbr,loss=0%] == 3") == 0


def test_assertion_selectors_must_be_known_and_unambiguous(sweep):
    s = summarize(load_runs([sweep]))
    with pytest.raises(ConfigError, match="matches 2 different groups.*add loss"):
        check_assertions(s, ["goodput[cc=bbr] > 1"])
    with pytest.raises(ConfigError, match="unknown selector 'colour'"):
        check_assertions(s, ["goodput[colour=red,cc=bbr,loss=1%] > 1"])
    (v,) = check_assertions(s, ["goodput[cc=vegas,loss=1%] > 1"])
    assert not v.passed and "no value" in v.message


def test_flow_attribute_selector_in_a_shared_run(tmp_path):
    write_run(tmp_path, "shared", variables={"mix": "shared"},
              flows=[FakeFlow("a", "cubic", 10e6), FakeFlow("b", "bbr", 80e6)])
    s = summarize(load_runs([tmp_path]))
    verdicts = check_assertions(s, ["goodput[cc=bbr] > 5 * goodput[cc=cubic]", "jain < 0.7",
                                    "goodput[flow=a] == 10mbit"])
    assert [v.passed for v in verdicts] == [True, True, True]


def test_flow_selectors_pick_only_runs_that_have_such_flows(tmp_path):
    for mix, flows in (("cubic-alone", [FakeFlow("c", "cubic", 3e6)]),
                       ("bbr-alone", [FakeFlow("b", "bbr", 90e6)]),
                       ("shared", [FakeFlow("c", "cubic", 3e6), FakeFlow("b", "bbr", 85e6)])):
        write_run(tmp_path, mix, variables={"mix": mix}, flows=flows)
    s = summarize(load_runs([tmp_path]))
    with pytest.raises(ConfigError, match=r"matches 2 different groups \(\[mix=cubic-alone\], "
                                          r"\[mix=shared\]\); add mix"):
        check_assertions(s, ["goodput[cc=cubic] > 1"])
    (vegas,) = check_assertions(s, ["goodput[cc=vegas] > 1"])  # no such flow: fails, says so
    assert not vegas.passed and "no value" in vegas.message
    (v,) = check_assertions(s, ["goodput[cc=bbr,mix=bbr-alone] > 25 * goodput[cc=cubic,mix=shared]"])
    assert v.passed and v.message == "holds: 90 Mbit/s > 75 Mbit/s"


def test_request_response_latency_is_a_metric_over_every_transaction(tmp_path):
    for cc, lat in (("cubic", (20.0, 30.0, 250.0, 260.0)), ("bbr", (20.0, 21.0, 22.0, 60.0))):
        write_run(tmp_path, cc, variables={"bulk_cc": cc},
                  flows=[FakeFlow("bulk", cc, 40e6),
                         FakeFlow("rpc", "cubic", 1e6, latencies_ms=lat[:2]),
                         FakeFlow("rpc2", "cubic", 1e6, latencies_ms=lat[2:])])
    s = summarize(load_runs([tmp_path]))
    row = s.select({"bulk_cc": "cubic"})
    assert row.estimate("latency_p99").mean == pytest.approx(0.260)
    assert row.estimate("latency_p50").mean == pytest.approx(0.030)   # 2nd of 4, merged
    assert s.select({"bulk_cc": "bbr", "flow": "rpc"}).estimate("latency_p99").mean == \
        pytest.approx(0.021)
    assert s.select({"bulk_cc": "bbr", "flow": "bulk"}).estimate("latency_p50").mean is None
    (v,) = check_assertions(s, ["latency_p99[bulk_cc=bbr] < latency_p99[bulk_cc=cubic] / 2"])
    assert v.passed, v.message


def test_runs_killed_before_their_result_are_reported_not_ignored(tmp_path):
    killed = tmp_path / "wl" / "20260101T000000Z-dead"
    killed.mkdir(parents=True)
    (killed / "manifest.json").write_text("{}")
    with pytest.raises(ResultsError, match="1 run directory has none: still running, or stopped "
                                           "before writing it"):
        load_runs([tmp_path])
    write_run(tmp_path / "wl", "ok", variables={"cc": "bbr"}, flows=[FakeFlow("f", "bbr", 1e6)])
    rs = load_runs([tmp_path])
    assert len(rs.runs) == 1 and rs.interrupted == [killed]
    assert "1 without result.json" in rs.exclusion_note()


def test_assertions_compare_like_with_like(sweep):
    s = summarize(load_runs([sweep]))
    with pytest.raises(ConfigError, match=r"compares goodput\[cc=bbr,loss=1%\] \(a rate\) "
                                          r"with 1ms \(a time\)"):
        check_assertions(s, ["goodput[cc=bbr,loss=1%] > 1ms"])


@pytest.mark.parametrize("argv, message", [
    (["--assert", "goodput[cc=bbr] >"], "bad assertion"),
    (["--assert", "__import__('os') > 1"], "not allowed"),
    (["--metrics", "speed"], "unknown speed"),
    (["--junit", "x.xml"], "needs at least one --assert"),
])
def test_cli_bad_arguments(sweep, capsys, argv, message):
    assert compare(str(sweep), *argv) == 2
    assert message in capsys.readouterr().err


def test_bad_input_directories(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsError, match="no runs found"):
        load_runs([empty])
    assert compare(str(empty)) == ResultsError.exit_code
    assert "no runs found" in capsys.readouterr().err
    with pytest.raises(ResultsError, match="no such file"):
        load_runs([tmp_path / "missing"])
    mixed = tmp_path / "mixed"
    write_run(mixed, "a", workload="one", variables={}, flows=[FakeFlow("f", "bbr", 1e6)])
    write_run(mixed, "b", workload="two", variables={}, flows=[FakeFlow("f", "bbr", 1e6)])
    with pytest.raises(ResultsError, match="different workloads are mixed: one .*two"):
        load_runs([mixed])
    future = tmp_path / "future"
    write_run(future, "a", variables={}, flows=[FakeFlow("f", "bbr", 1e6)], schema_version=99)
    with pytest.raises(ResultsError, match="schema version 99 is unknown"):
        load_runs([future])
    broken = tmp_path / "broken" / "r"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_runs([broken])
    assert issubclass(ResultsError, TestbedError)


def test_real_run_layout_from_testbed_run(tmp_path):
    """Loader reads what Run._collect writes (same CSV column sets)."""
    from testbed.collect import qdisc, tcpinfo
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "bbr", 1e6)])
    assert (run / "tcp_info.csv").read_text().splitlines()[0] == ",".join(("flow",) + tcpinfo.CSV_COLUMNS)
    assert (run / "qdisc.csv").read_text().splitlines()[0] == ",".join(qdisc.CSV_COLUMNS)


def test_flows_of_different_cc_in_one_run_are_split_by_cc_and_it_says_so(tmp_path, capsys):
    """Pooled, every row of a shared BBR/CUBIC sweep showed the sum (~47 Mbit/s for both)."""
    for q in ("1bdp", "8bdp"):
        write_run(tmp_path, f"q{q}", variables={"queue": q},
                  flows=[FakeFlow("a", "cubic", 10e6), FakeFlow("b", "bbr", 30e6)])
    s = summarize(load_runs([tmp_path]))
    assert s.flow_by == ["cc"] and "split by cc" in s.note
    assert [(r.labels["cc"], r.estimate("goodput").mean, r.estimate("share").mean)
            for r in s.rows[:2]] == [("bbr", 30e6, 0.75), ("cubic", 10e6, 0.25)]
    assert compare(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "split by cc" in out and "share" in out


def test_comparisons_that_cannot_be_significant_are_one_line(tmp_path, capsys):
    for q in ("1bdp", "2bdp", "4bdp"):
        for rep in range(2):
            write_run(tmp_path, f"q{q}-{rep}", variables={"queue": q}, repetition=rep,
                      flows=[FakeFlow("a", "cubic", (10 + rep) * 1e6)])
    assert compare(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.count("cannot be significant") == 1 and "verdict" not in out
    assert compare(str(tmp_path), "--format", "markdown") == 0
    md = capsys.readouterr().out
    assert "3 of 3 pairs not shown: they cannot be significant with n=2 vs 2" in md
    assert "| A | B |" not in md


def test_metrics_can_be_given_one_by_one(tmp_path, capsys):
    """`--metric goodput --metric rtt_p50` (as --by repeats): argparse took --metric as an
    abbreviation of --metrics and kept the last one only, silently."""
    from testbed.analysis.synthetic import FakeFlow, write_run
    from testbed.cli import main as cli
    write_run(tmp_path, "r1", variables={"cc": "bbr"}, flows=[FakeFlow("f", "bbr", 1e6)])
    assert cli.main(["compare", str(tmp_path), "--metric", "goodput", "--metric", "rtt_p50",
                     "--metrics", "jain,goodput", "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.count("goodput") >= 1 and "rtt_p50" in header and "jain" in header, header
    assert header.index("goodput") < header.index("rtt_p50") < header.index("jain"), header
