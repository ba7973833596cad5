"""Driver output parsers on real captured output (tests/data)."""

import json
from pathlib import Path

import pytest

from testbed.traffic import default_driver
from testbed.traffic.builtin import parse_builtin
from testbed.traffic.iperf3 import Iperf3Driver, parse_iperf3
from testbed.units import Size
from testbed.workload import Flow

DATA = Path(__file__).resolve().parents[1] / "data"


def load(name):
    return json.loads((DATA / name).read_text())


def test_iperf3_parallel_cubic():
    res = parse_iperf3(load("iperf3_tcp_p2_cubic.json"), None, name="f", cc_requested="cubic")
    assert res.ok, res.error
    assert len(res.connections) == 2
    assert {c["cc"] for c in res.connections} == {"cubic"}
    assert all(c["local_port"] for c in res.connections)
    assert 350e6 < res.goodput_bps < 450e6  # -P 2 at -b 200M each
    assert res.retransmits == 0


def test_iperf3_size_bounded_bbr():
    res = parse_iperf3(load("iperf3_tcp_size_bbr.json"), None, name="f")
    assert res.ok
    assert res.bytes >= 5 * 1024 * 1024
    assert res.connections[0]["cc"] == "bbr"


def test_iperf3_connection_refused_is_an_error_even_with_status_0():
    res = parse_iperf3(load("iperf3_refused.json"), None, name="f")
    assert not res.ok and "Connection refused" in res.error


def test_iperf3_server_died_mid_run():
    res = parse_iperf3(load("iperf3_server_died.json"), None, name="f")
    assert not res.ok and "closed unexpectedly" in res.error


def test_iperf3_udp_test_that_never_started_says_why():
    # captured: the start datagram dropped, the waiting client stopped with SIGTERM
    res = parse_iperf3(load("iperf3_udp_start_lost.json"), None, name="f", protocol="udp")
    assert not res.ok and "the client has terminated" in res.error
    assert "never started" in res.error and "driver: builtin" in res.error
    refused = parse_iperf3(load("iperf3_refused.json"), None, name="f", protocol="udp")
    assert "never started" not in refused.error  # no control connection: not this case


def test_iperf3_no_output():
    assert not parse_iperf3(None, None, name="f").ok


def test_builtin_tcp_bulk_reads_back_cc():
    res = parse_builtin(load("builtin_tcp_bulk_bbr.client.json"), load("builtin_tcp_bulk_bbr.server.json"),
                        name="b", protocol="tcp", kind="bulk", cc_requested="bbr")
    assert res.ok
    assert res.connections[0]["cc"] == "bbr"
    assert res.bytes == 3080192000 and 5e9 < res.goodput_bps < 7e9


def test_builtin_rr_latencies():
    res = parse_builtin(load("builtin_rr.client.json"), load("builtin_rr.server.json"),
                        name="r", protocol="tcp", kind="rr")
    assert res.ok
    assert len(res.latency_us) > 5
    assert all(0 < x < 100_000 for x in res.latency_us)
    assert res.connections[0]["cc"] == "reno"


def test_builtin_udp_loss_jitter_owd():
    res = parse_builtin(load("builtin_udp.client.json"), load("builtin_udp.server.json"),
                        name="u", protocol="udp", kind="bulk", packet_size=1200)
    assert res.ok
    sent = res.udp["sent"]
    assert sent > 10 and res.udp["received"] == sent and res.udp["loss"] == 0.0
    assert res.udp["reordered"] == 0 and res.udp["jitter_us"] >= 0
    assert len(res.owd_us) == sent and all(x > 0 for x in res.owd_us)


def test_builtin_udp_counts_missing_packets_as_lost():
    client = {"streams": [{"stream": 0, "sent": 100}], "seconds": 1.0}
    server = {"streams": [{"stream": 0, "received": 90, "bytes": 90 * 1200, "max_seq": 99, "sent": 100,
                           "reordered": 2, "duplicates": 0, "jitter_us": 10.0, "owd_us": [1.0] * 90}]}
    res = parse_builtin(client, server, name="u", protocol="udp", kind="bulk")
    assert res.udp["lost"] == 10 and abs(res.udp["loss"] - 0.1) < 1e-9 and res.udp["reordered"] == 2


def test_builtin_client_error_fails_the_flow():
    res = parse_builtin({"role": "client", "connections": [{}], "errors": ["connect to 10.0.0.9:5201: "
                         "Connection refused"]}, None, name="x", protocol="tcp", kind="bulk")
    assert not res.ok and "Connection refused" in res.error


def test_iperf3_interrupted_takes_bytes_from_the_server():
    # Ctrl-C: both ends print JSON; the client's receiver totals are 0 (it never got them)
    res = parse_iperf3(load("iperf3_interrupted.client.json"), load("iperf3_interrupted.server.json"),
                       name="f", cc_requested="cubic")
    assert not res.ok and "interrupt" in res.error
    assert res.bytes == 2221232 and 15e6 < res.goodput_bps < 21e6


def test_builtin_connection_that_carried_nothing_fails_the_flow():
    conn = {"local_host": "10.0.0.1", "local_port": 40000, "cc": "bbr", "bytes": 0,
            "start_ns": 0, "end_ns": 2_000_000_000}
    res = parse_builtin({"role": "client", "connections": [conn], "errors": []}, None,
                        name="x", protocol="tcp", kind="bulk")
    assert not res.ok and "no data arrived" in res.error
    rr = parse_builtin({"role": "client", "connections": [dict(conn, transactions=0)],
                        "errors": []}, None, name="x", protocol="tcp", kind="rr")
    assert not rr.ok and "no request was answered" in rr.error
    fine = parse_builtin({"role": "client", "connections": [dict(conn, bytes=1000)], "errors": []},
                         None, name="x", protocol="tcp", kind="bulk")
    assert fine.ok and fine.bytes == 1000


# ---- size and count: size is per connection, FCT per connection or none --------------

def _bulk_pair(sizes_got, size, seconds):
    """Agent JSON for len(sizes_got) connections of a size-bounded flow."""
    client = {"role": "client", "errors": [], "connections": [
        {"local_host": "10.0.0.1", "local_port": 40000 + i, "cc": "cubic", "bytes": size,
         "start_ns": 1_000_000_000, "end_ns": 1_000_000_000 + int(s * 1e9)}
        for i, s in enumerate(seconds)]}
    server = {"role": "server", "connections": [
        {"remote_host": "10.0.0.1", "remote_port": 40000 + i, "bytes": got}
        for i, got in enumerate(sizes_got)]}
    return client, server


def test_builtin_size_and_count_gives_each_connection_its_own_fct():
    client, server = _bulk_pair([2_000_000] * 3, 2_000_000, [1.69, 0.86, 0.94])
    res = parse_builtin(client, server, name="b", protocol="tcp", kind="bulk", size=2_000_000)
    assert res.ok, res.error
    assert res.bytes == 6_000_000                       # 2 MB per connection
    assert [c["fct_s"] for c in res.connections] == pytest.approx([1.69, 0.86, 0.94])


def test_builtin_connection_that_did_not_deliver_its_size_has_no_fct_and_fails():
    client, server = _bulk_pair([2_000_000, 500_000], 2_000_000, [1.0, 9.0])
    res = parse_builtin(client, server, name="b", protocol="tcp", kind="bulk", size=2_000_000)
    assert [c["fct_s"] for c in res.connections] == [pytest.approx(1.0), None]
    assert not res.ok and "500000 of its 2000000 bytes" in res.error


def test_builtin_duration_flow_has_no_completion_time():
    client, server = _bulk_pair([5_000_000], 5_000_000, [3.0])
    res = parse_builtin(client, server, name="b", protocol="tcp", kind="bulk")
    assert res.ok and res.connections[0]["fct_s"] is None


def test_iperf3_reports_no_fct_it_cannot_measure():
    # captured -n 5 MiB: the receiver summary at its "end" holds 3.0 of the 5.2 MB
    data = load("iperf3_tcp_size_bbr.json")
    assert data["end"]["streams"][0]["receiver"]["bytes"] < data["start"]["test_start"]["bytes"]
    res = parse_iperf3(data, None, name="f")
    assert [c["fct_s"] for c in res.connections] == [None]


def test_iperf3_refuses_size_with_count_and_size_flows_default_to_builtin():
    flow = Flow(name="f", src="h1", dst="h3", size=Size.parse("2MB"), count=3)
    assert default_driver(flow) == "builtin"
    [problem] = [p for p in Iperf3Driver().check(flow) if "count" in p]
    assert "driver: builtin" in problem
    one = Flow(name="g", src="h1", dst="h3", size=Size.parse("2MB"))
    assert not [p for p in Iperf3Driver().check(one) if "count" in p]
    assert default_driver(Flow(name="d", src="h1", dst="h3", count=3)) == "iperf3"


@pytest.mark.parametrize("data, why", [
    (b'{"end": {"sum_sent": {"bytes": 5}}, "error": "caf\xe9"}', "is not UTF-8 text (byte 49 is 0xe9)"),
    (b"[1, 2, 3]\n", "holds a list, not a JSON object"),
    (b'"done"', "holds the string 'done', not a JSON object"),
    (b"", "is empty"),
    (b'{"start": {}, "end": {"sum', "is not valid JSON"),
])
def test_driver_output_that_is_not_a_json_object_fails_its_flow_with_why(tmp_path, data, why):
    from testbed.traffic import FlowPlan
    from testbed.traffic.builtin import BuiltinDriver
    for driver in (Iperf3Driver(), BuiltinDriver()):
        plan = FlowPlan(flow=Flow("f", "h1", "h2"), port=5201, src_ip="10.0.0.1",
                        dst_ip="10.0.0.2", seconds=1.0, out_dir=tmp_path)
        plan.client_out.write_bytes(data)
        res = driver.parse(plan)
        assert not res.ok and f"f.client.json {why}" in res.error


@pytest.mark.parametrize("path, value, field", [
    (("end",), [], "end: expected an object, found a list"),
    (("end", "sum_received", "bytes"), "5 MB", "end.sum_received.bytes: expected a number"),
    (("end", "sum_sent", "seconds"), float("inf"), "end.sum_sent.seconds: expected a number"),
    (("end", "streams", 0, "sender"), 7, "end.streams[0].sender: expected an object or null"),
    (("start", "connected", 0, "socket"), [5], "start.connected[0].socket: expected a whole number"),
])
def test_iperf3_json_of_the_wrong_shape_fails_the_flow_naming_the_field(path, value, field):
    client = load("iperf3_tcp_p2_cubic.json")
    target = client
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    res = parse_iperf3(client, None, name="f")
    assert not res.ok and res.error.startswith(f"iperf3 client output: {field}")


def test_agent_json_of_the_wrong_shape_fails_the_flow_naming_the_field():
    client, server = load("builtin_udp.client.json"), load("builtin_udp.server.json")
    del server["streams"][0]["received"]
    res = parse_builtin(client, server, name="u", protocol="udp", kind="bulk")
    assert not res.ok and res.error == "builtin server output: streams[0].received: missing"
    client = load("builtin_rr.client.json")
    client["connections"][0]["latencies_us"] = ["fast"]
    res = parse_builtin(client, None, name="r", protocol="tcp", kind="rr")
    assert res.error == ("builtin client output: connections[0].latencies_us[0]: expected a "
                         "number, found the string 'fast'")


def _plan(tmp_path, **flow):
    from testbed.traffic import FlowPlan
    return FlowPlan(flow=Flow("f", "h1", "h2", **flow), port=5201, src_ip="10.0.0.1",
                    dst_ip="10.0.0.2", seconds=1.0, out_dir=tmp_path)


def test_socket_buffers_reach_the_drivers(tmp_path):
    """rcvbuf (the receiver's SO_RCVBUF) and sndbuf (the sender's SO_SNDBUF) per flow."""
    from testbed.traffic.builtin import BuiltinDriver
    plan = _plan(tmp_path, rcvbuf=Size(65536), sndbuf=Size(1 << 20))
    server, client = BuiltinDriver().server_argv(plan), BuiltinDriver().client_argv(plan)
    assert server[server.index("--rcvbuf") + 1] == "65536" and "--sndbuf" not in server
    assert client[client.index("--sndbuf") + 1] == "1048576" and "--rcvbuf" not in client
    argv = Iperf3Driver().client_argv(_plan(tmp_path, rcvbuf=Size(65536)))
    assert argv[argv.index("-w") + 1] == "65536"
    [problem] = [p for p in Iperf3Driver().check(plan.flow) if "-w" in p]
    assert "use driver: builtin" in problem


def test_agent_sets_the_socket_buffers_it_is_given():
    from testbed.traffic import agent
    args = agent.build_parser().parse_args(["tcp-server", "--port", "1", "--rcvbuf", "65536"])
    assert args.rcvbuf == 65536
    args = agent.build_parser().parse_args(["tcp-client", "--port", "1", "--sndbuf", "8192"])
    assert args.sndbuf == 8192
