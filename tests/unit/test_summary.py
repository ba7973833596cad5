"""A flow's entry in result.json, from hand-made samples (pure logic)."""

from pathlib import Path

from testbed.run.summary import flow_summary, qdisc_drops
from testbed.traffic import FlowPlan, FlowResult
from testbed.units import Duration
from testbed.workload.model import Flow


def plan(cc="bbr"):
    flow = Flow(name="bulk", src="h1", dst="h3", cc=cc, duration=Duration(10.0))
    return FlowPlan(flow=flow, port=5201, src_ip="10.0.0.1", dst_ip="10.0.1.1", seconds=10.0,
                    out_dir=Path("/nonexistent"))


def sample(t, sport, cc, srtt_us=40_000, node="h1", dport=5201, dst="10.0.1.1", retrans=0):
    return {"t": t, "node": node, "src": "10.0.0.1", "sport": sport, "dst": dst, "dport": dport,
            "cc": cc, "srtt_us": srtt_us, "min_rtt_us": 39_000, "total_retrans": retrans}


def result(ports=(40001,), error=None):
    res = FlowResult(name="bulk", driver="iperf3", protocol="tcp", kind="bulk", bytes=12_500_000,
                     seconds=10.0, connections=[{"local_port": p, "cc": "bbr"} for p in ports])
    return res.fail(error) if error else res


def test_cc_is_the_sockets_last_and_the_default_before_connect_is_kept_apart():
    rows = [sample(0.0, 40001, "cubic"), sample(0.1, 40001, "bbr", retrans=3),
            sample(0.1, 40002, "cubic"),                        # another flow's socket
            sample(0.1, 40001, "cubic", dport=5202),            # another port
            sample(0.1, 40001, "cubic", node="h2")]             # another node
    ts: list = []
    out = flow_summary(plan(), result(), rows, {}, ts)
    assert out["ok"] and out["cc"] == "bbr" and out["cc_source"] == "tcp_info"
    assert out["cc_at_connect"] == ["cubic"]
    assert out["tcp_info_samples"] == 2 and len(ts) == 2 and ts[0]["flow"] == "bulk"
    assert out["retransmits_tcp_info"] == 3
    assert out["goodput_bps"] == 10e6
    assert out["rtt_ms"]["min_rtt"] == 39.0


def test_sockets_that_used_another_cc_than_asked_fail_the_flow():
    out = flow_summary(plan("bbr"), result(), [sample(0.1, 40001, "cubic")], {}, [])
    assert not out["ok"] and "asked for cc bbr but the sockets used cubic" in out["error"]


def test_without_samples_the_drivers_cc_is_reported_as_such():
    out = flow_summary(plan(), result(), [], {}, [])
    assert out["cc"] == "bbr" and out["cc_source"] == "driver"
    assert out["retransmits_tcp_info"] is None


def test_a_failure_found_by_the_run_overrides_and_keeps_the_drivers_error():
    out = flow_summary(plan(), result(error="iperf3 client: interrupted"), [], {}, [],
                       failure="server on h3 port 5201 (pid 7) was killed by SIGKILL")
    assert not out["ok"]
    assert out["error"] == ("server on h3 port 5201 (pid 7) was killed by SIGKILL "
                            "(iperf3 client: interrupted)")


def test_qdisc_drops_are_differences_per_qdisc_and_backlog_is_the_peak():
    def row(t, drops, backlog, ifname="eth0"):
        return {"t": t, "node": "r1", "ifname": ifname, "handle": "1:", "kind": "tbf",
                "drops": drops, "backlog": backlog}
    rows = [row(0, 5, 0), row(1, 9, 3000), row(2, 12, 1000), row(0, None, None, "eth1")]
    none = {"marks": None, "aqm_drops": None, "sojourn_ms_max": None}  # a tbf does not say
    assert qdisc_drops(rows) == {"r1:eth0 tbf 1:": {"drops": 7, "backlog_max": 3000, **none},
                                 "r1:eth1 tbf 1:": {"drops": 0, "backlog_max": 0, **none}}
    assert qdisc_drops([]) == {}
