"""sock_diag tcp_info decoding and pcap analysis on real captured data."""

import struct
from pathlib import Path

from pyroute2.netlink.diag import MarshalDiag

from testbed.collect import tcpinfo
from testbed.collect.capture import analyze_pcap
from testbed.results import jain_index, percentiles

DATA = Path(__file__).resolve().parents[1] / "data"


def messages(data):
    off = 0
    while off < len(data):
        length = struct.unpack_from("=I", data, off)[0]
        yield data[off + 16: off + length]
        off += (length + 3) & ~3


def test_decoder_agrees_with_pyroute2_on_a_real_dump():
    data = (DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()
    ours = [tcpinfo.decode_message(m) for m in messages(data)]
    theirs = list(MarshalDiag().parse(data))
    assert len(ours) == len(theirs) == 4
    for mine, ref in zip(ours, theirs):
        info = ref.get_attr("INET_DIAG_INFO")
        assert mine["sport"] == ref["idiag_sport"] and mine["dport"] == ref["idiag_dport"]
        assert mine["cc"] == ref.get_attr("INET_DIAG_CONG")
        assert mine["cwnd"] == info["tcpi_snd_cwnd"]
        assert mine["srtt_us"] == info["tcpi_rtt"] and mine["rttvar_us"] == info["tcpi_rttvar"]
        assert mine["min_rtt_us"] == info["tcpi_min_rtt"]
        assert mine["bytes_acked"] == info["tcpi_bytes_acked"]
        assert mine["delivery_rate_bps"] == info["tcpi_delivery_rate"] * 8
        assert mine["total_retrans"] == info["tcpi_total_retrans"]
        bbr = ref.get_attr("INET_DIAG_BBRINFO")
        if mine["cc"] == "bbr":
            assert mine["bbr_min_rtt_us"] == bbr["bbr_min_rtt"]
            assert mine["bbr_bw_bps"] == ((bbr["bbr_bw_hi"] << 32) | bbr["bbr_bw_lo"]) * 8
        else:
            assert bbr is None and mine.get("bbr_bw_bps") is None
    assert {r["cc"] for r in ours} == {"cubic", "bbr"}


def test_spool_roundtrip():
    msgs = list(messages((DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()))
    spool = b"".join(struct.pack("=dHI", 10.0 + i, i % 2, len(m)) + m for i, m in enumerate(msgs))
    rows = tcpinfo.decode_spool(spool, ["h1", "h2"], t0=10.0)
    assert [r["t"] for r in rows] == [0.0, 1.0, 2.0, 3.0]
    assert [r["node"] for r in rows] == ["h1", "h2", "h1", "h2"]


def test_spool_v2_holds_whole_netlink_reads():
    msgs = list(messages((DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()))

    def nl(m, mtype=20):
        return struct.pack("=IHHII", 16 + len(m), mtype, 2, 1, 0) + m + b"\0" * (-len(m) % 4)
    read1 = nl(msgs[0]) + nl(msgs[1])
    read2 = nl(msgs[2]) + nl(msgs[3]) + nl(struct.pack("=i", 0), mtype=3)  # ends with NLMSG_DONE
    spool = tcpinfo.SPOOL_MAGIC + b"".join(struct.pack("=dHI", 5.0 + i, i, len(r)) + r
                                           for i, r in enumerate((read1, read2)))
    rows = tcpinfo.decode_spool(spool, ["h1", "h2"], t0=5.0)
    assert [(r["t"], r["node"]) for r in rows] == [(0.0, "h1"), (0.0, "h1"), (1.0, "h2"), (1.0, "h2")]
    assert rows == [dict(tcpinfo.decode_message(m), t=r["t"], node=r["node"])
                    for m, r in zip(msgs, rows)]


def test_port_filter_bytecode_layout():
    op = struct.Struct("=BBH")
    # one range (5201-5203) and a single port (6000): GE, LE, JMP, EQ
    bc = tcpinfo.port_filter({5201, 5202, 5203, 6000})
    ops = [op.unpack_from(bc, o) for o in (0, 4, 8, 12, 16, 20, 24)]
    assert len(bc) == 28
    assert ops[0] == (tcpinfo.BC_D_GE, 8, 20) and ops[1][2] == 5201     # fail -> next block
    assert ops[2] == (tcpinfo.BC_D_LE, 8, 12) and ops[3][2] == 5203
    assert ops[4] == (tcpinfo.BC_JMP, 4, 12)                           # passed -> end (accept)
    assert ops[5] == (tcpinfo.BC_D_EQ, 8, 12) and ops[6][2] == 6000    # fail -> past end (reject)
    req = tcpinfo.build_request(dports=frozenset({5201}))
    assert struct.unpack_from("=I", req)[0] == len(req) == 16 + 56 + 4 + 8
    assert struct.unpack_from("=HH", req, 72) == (12, tcpinfo.INET_DIAG_REQ_BYTECODE)


def test_request_layout():
    req = tcpinfo.build_request()
    length, mtype, flags = struct.unpack_from("=IHH", req)
    assert length == len(req) == 16 + 56 and mtype == 20 and flags == 0x301
    assert req[18] == tcpinfo.EXT_MASK


def test_pcap_analysis_of_a_real_capture():
    flows = analyze_pcap((DATA / "lo_iperf3_bbr.pcap").read_bytes())
    data = max(flows.values(), key=lambda f: f["bytes"])
    assert data["dport"] == 15401
    assert data["bytes"] > 2_500_000           # 20 Mbit/s for 1 s
    assert 15e6 < data["goodput_bps"] < 25e6
    assert data["rtt_samples"] > 10 and data["rtt_ms_p50"] < 5


def test_percentiles_and_fairness():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == 50 and p["p99"] == 99 and p["min"] == 1 and p["max"] == 100
    assert percentiles([])["p50"] is None
    assert jain_index([1, 1, 1]) == 1.0 and abs(jain_index([1, 0, 0, 0]) - 0.25) < 1e-9
