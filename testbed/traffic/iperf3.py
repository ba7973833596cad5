"""iperf3 as the default bulk-transfer driver (its ``--json`` output).

One iperf3 server (``-1``: one test, then exit) per flow line, one client
with ``-P count``; ``-C cc`` sets the congestion control of its sockets.
iperf3 reports its own errors in the JSON ``error`` key, sometimes with exit
status 0, so ``parse`` looks there first.

A flow's ``size`` is per connection (as in the built-in driver). iperf3's ``-n``
is a total over all ``-P`` streams, so a size with ``count`` > 1 is refused
(``check``) rather than run as something else. iperf3 reports no flow completion
time: with ``-n`` its end times are when the sender had written the bytes and
when the receiver's summary was taken (captured: 3.0 of 5.2 MB had arrived
then), not when the last byte arrived; ``fct_s`` is left out.
"""

from __future__ import annotations

from typing import Any

from testbed.shape import ListOf, Obj, Opt, problem_text
from testbed.results import read_json
from testbed.traffic.base import CONNECT_TIMEOUT, Driver, FlowPlan, FlowResult, tail
from testbed.workload.model import Flow

# what parse_iperf3 reads of iperf3's --json output (client's or server's), with its types
_TOTALS = Obj({k: float for k in ("bytes", "seconds", "retransmits", "mean_rtt", "min_rtt",
                                  "max_rtt", "max_snd_cwnd", "lost_percent", "packets",
                                  "lost_packets", "jitter_ms")} | {"socket": int})
IPERF3_OUTPUT = Obj({
    "error": object,
    "start": Obj({"connected": ListOf(Obj({"socket": int, "local_host": str, "local_port": int})),
                  "test_start": Obj({"bytes": float}), "cookie": object}),
    "end": Obj({"sender_tcp_congestion": str,
                "streams": ListOf(Obj({k: Opt(_TOTALS) for k in ("sender", "udp", "receiver")})),
                "sum": _TOTALS, "sum_sent": _TOTALS, "sum_received": _TOTALS}),
})


def parse_iperf3(client: dict[str, Any] | None, server: dict[str, Any] | None, *,
                 name: str, protocol: str = "tcp", cc_requested: str | None = None) -> FlowResult:
    """Turn iperf3 client (and optionally server) JSON into a ``FlowResult``. Pure."""
    res = FlowResult(name=name, driver="iperf3", protocol=protocol, kind="bulk",
                     cc_requested=cc_requested)
    if client is None:
        return res.fail("iperf3 client produced no JSON")
    for role, out in (("client", client), ("server", server)):
        bad = problem_text(out, Opt(IPERF3_OUTPUT), f"iperf3 {role} output")
        if bad:
            return res.fail(bad)
    if client.get("error"):
        res.fail(f"iperf3 client: {client['error']}")
    if server is not None and server.get("error") and "interrupt" not in str(server["error"]):
        res.fail(f"iperf3 server: {server['error']}")
    start = client.get("start", {})
    end = client.get("end", {})
    ports = {c.get("socket"): c for c in start.get("connected", [])}
    cc = end.get("sender_tcp_congestion")
    for stream in end.get("streams", []):
        snd = stream.get("sender") or stream.get("udp") or {}
        rcv = stream.get("receiver") or {}
        conn = ports.get(snd.get("socket"), {})
        res.connections.append({
            "local_host": conn.get("local_host"), "local_port": conn.get("local_port"),
            "cc": cc, "bytes_sent": snd.get("bytes"), "bytes": rcv.get("bytes", snd.get("bytes")),
            "seconds": snd.get("seconds"), "retransmits": snd.get("retransmits"),
            "mean_rtt_us": snd.get("mean_rtt"), "min_rtt_us": snd.get("min_rtt"),
            "max_rtt_us": snd.get("max_rtt"), "max_snd_cwnd": snd.get("max_snd_cwnd"),
            "fct_s": None,  # iperf3 cannot tell when the last byte arrived (module docstring)
        })
    if protocol == "udp":
        s = end.get("sum", {})
        res.bytes = int(s.get("bytes", 0) * (1 - s.get("lost_percent", 0) / 100.0))
        res.seconds = float(s.get("seconds", 0.0))
        res.udp = {"sent": s.get("packets"), "lost": s.get("lost_packets"),
                   "loss": (s.get("lost_percent") or 0) / 100.0, "jitter_us": (s.get("jitter_ms") or 0) * 1e3}
    else:
        recv = end.get("sum_received", {})
        sent = end.get("sum_sent", {})
        res.bytes = int(recv.get("bytes", 0))
        server_recv = ((server or {}).get("end") or {}).get("sum_received") or {}
        if not res.bytes and server_recv.get("bytes"):
            # interrupted: the client never got the server's totals; the server has them
            res.bytes = int(server_recv["bytes"])
        res.seconds = float(sent.get("seconds") or recv.get("seconds") or 0.0)
        if start.get("test_start", {}).get("bytes"):
            # size-bounded (-n): iperf3's receiver summary is taken when the sender says it
            # is done, before the last bytes land; the size is what the flow delivered
            res.bytes = int(sent.get("bytes", res.bytes))
            res.seconds = max(float(sent.get("seconds") or 0.0), float(recv.get("seconds") or 0.0))
        res.retransmits = sent.get("retransmits")
    if res.ok and not end:
        res.fail("iperf3 ended without a summary (was it stopped early?)")
    if protocol == "udp" and start.get("cookie") and not start.get("connected"):
        # the control connection was made, the UDP stream never was
        res.error = (f"{res.error or 'iperf3 client: no data'}: the UDP test never started; "
                     "iperf3 does not resend the datagram that starts it, so loss on the "
                     "path can leave it waiting (driver: builtin has no such step)")
    return res


class Iperf3Driver(Driver):
    """Bulk TCP (and UDP on request) with iperf3."""

    name = "iperf3"
    binary = "iperf3"
    apt_package = "iperf3"

    def check(self, flow: Flow) -> list[str]:
        problems = super().check(flow)
        if flow.rr is not None:
            problems.append("iperf3 cannot do request/response traffic; use driver: builtin")
        if flow.rcvbuf and flow.sndbuf and flow.rcvbuf != flow.sndbuf:
            problems.append("iperf3 sets one socket buffer size (-w) for both ends; give "
                            "rcvbuf and sndbuf the same size or use driver: builtin")
        if flow.size is not None and flow.count > 1:
            problems.append(f"size {flow.size} with count {flow.count}: each connection sends "
                            "'size', but iperf3 -n sends it in total over all its streams and "
                            "reports no completion time per connection; use driver: builtin "
                            "(the default for size-bounded flows)")
        return problems

    def server_argv(self, plan: FlowPlan) -> list[str]:
        return ["iperf3", "-s", "-1", "--json", "-p", str(plan.port), "-B", plan.dst_ip]

    def client_argv(self, plan: FlowPlan) -> list[str]:
        f = plan.flow
        argv = ["iperf3", "-c", plan.dst_ip, "-p", str(plan.port), "-B", plan.src_ip, "--json",
                "-i", "1", "-P", str(f.count), "--connect-timeout", f"{CONNECT_TIMEOUT * 1000:.0f}"]
        if f.size is not None:
            argv += ["-n", str(f.size.bytes)]
        else:
            argv += ["-t", f"{plan.seconds:g}"]
        if f.protocol == "udp":
            argv += ["-u", "-l", str(f.packet_size.bytes)]
        if f.rate is not None:
            argv += ["-b", str(int(f.rate.bps))]
        if f.cc:
            argv += ["-C", f.cc]
        window = f.rcvbuf or f.sndbuf
        if window is not None:      # SO_SNDBUF and SO_RCVBUF, on both ends (sent to the server)
            argv += ["-w", str(window.bytes)]
        return argv

    def parse(self, plan: FlowPlan) -> FlowResult:
        client, why = read_json(plan.client_out)
        server, _ = read_json(plan.server_out)
        res = parse_iperf3(client, server, name=plan.flow.name, protocol=plan.flow.protocol,
                           cc_requested=plan.flow.cc)
        if client is None:
            res.error = f"iperf3 client: {why}; stderr: {tail(plan.client_err) or '(empty)'}"
        return res
