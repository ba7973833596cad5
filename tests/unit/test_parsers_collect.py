"""sock_diag tcp_info decoding and pcap analysis on real captured data."""

import struct
from pathlib import Path

import pytest
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
    rows, losses = tcpinfo.decode_spool(spool, ["h1", "h2"], t0=10.0)
    assert losses == []
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
    rows, losses = tcpinfo.decode_spool(spool, ["h1", "h2"], t0=5.0)
    assert losses == []
    assert [(r["t"], r["node"]) for r in rows] == [(0.0, "h1"), (0.0, "h1"), (1.0, "h2"), (1.0, "h2")]
    assert rows == [dict(tcpinfo.decode_message(m), t=r["t"], node=r["node"])
                    for m, r in zip(msgs, rows)]


def nl(m, mtype=20):
    return struct.pack("=IHHII", 16 + len(m), mtype, 2, 1, 0) + m + b"\0" * (-len(m) % 4)


def v2_spool(reads):
    return tcpinfo.SPOOL_MAGIC + b"".join(struct.pack("=dHI", 5.0 + i, 0, len(r)) + r
                                          for i, r in enumerate(reads))


def test_a_truncated_spool_keeps_what_came_before_and_says_where_it_ends():
    """A full disk or a sampler still writing leaves a spool cut anywhere: the records
    before the cut are kept, the rest is reported lost, nothing raises."""
    msgs = list(messages((DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()))
    spool = v2_spool([nl(m) for m in msgs])
    whole, _ = tcpinfo.decode_spool(spool, ["h1"])
    second = len(tcpinfo.SPOOL_MAGIC) + 14 + len(nl(msgs[0]))     # where record 2 starts
    for cut in (second + 3, second + 14 + 20, len(spool) - 1):
        rows, losses = tcpinfo.decode_spool(spool[:cut], ["h1"])
        kept = 1 if cut < len(spool) - 50 else 3
        assert rows == whole[:kept]
        last = second if kept == 1 else second + 2 * 14 + len(nl(msgs[1])) + len(nl(msgs[2]))
        assert losses == [f"tcp_info spool truncated at byte {last} of {cut}: {kept} samples "
                          "kept, the rest lost"]


def test_unreadable_spool_records_are_skipped_and_counted():
    msgs = list(messages((DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()))
    bad_frame = struct.pack("=IHHII", 9999, 20, 2, 1, 0) + msgs[1]       # longer than its read
    short = nl(msgs[2][:40])                                             # not an inet_diag_msg
    bad_cc = bytearray(msgs[3])
    at = bad_cc.find(b"bbr\0")
    bad_cc[at:at + 3] = b"\xff\xfe\xfd"                                  # not UTF-8
    spool = v2_spool([nl(msgs[0]), bad_frame, short, nl(bytes(bad_cc))])
    spool += struct.pack("=dHI", float("nan"), 0, len(nl(msgs[0]))) + nl(msgs[0])
    rows, losses = tcpinfo.decode_spool(spool, ["h1"])
    assert [r["sport"] for r in rows] == [tcpinfo.decode_message(m)["sport"]
                                          for m in (msgs[0], msgs[3])]
    assert rows[1]["cc"] == "\ufffd\ufffd\ufffd"
    assert losses == [f"tcp_info spool: 3 unreadable record(s) skipped (the "
                      f"first at byte {len(tcpinfo.SPOOL_MAGIC) + 2 * 14 + len(nl(msgs[0]))})"]


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
    flows, losses = analyze_pcap((DATA / "lo_iperf3_bbr.pcap").read_bytes())
    assert losses == []
    data = max(flows.values(), key=lambda f: f["bytes"])
    assert data["dport"] == 15401
    assert data["bytes"] > 2_500_000           # 20 Mbit/s for 1 s
    assert 15e6 < data["goodput_bps"] < 25e6
    assert data["rtt_samples"] > 10 and data["rtt_ms_p50"] < 5


def pcap_record(t: float, src: str, dst: str, sport: int, dport: int, seq: int, ack: int,
                flags: int, payload: int) -> bytes:
    """An Ethernet + IPv4 + TCP header record of a pcap, as a snaplen-limited capture keeps
    it: the IP total length says ``payload`` bytes followed, none of them are stored."""
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40 + payload, 0, 0, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    tcp = struct.pack(">HHIIHHHH", sport, dport, seq % 2**32, ack % 2**32, (5 << 12) | flags,
                      65535, 0, 0)
    frame = b"\0" * 12 + b"\x08\x00" + ip + tcp
    sec = int(t)
    return struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame) + payload) + frame


PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 96, 1)


def long_flow_pcap(total: int, mss: int = 64000, isn: int = 2**32 - 5000) -> bytes:
    """One direction sending ``total`` bytes in ``mss`` segments from ``isn``, one ACK per
    16 segments 10 ms later, over 40 s: the sequence numbers pass 2^32 and, for totals
    over 4 GiB, the relative ones too."""
    out = [PCAP_HEADER, pcap_record(0.0, "10.0.0.1", "10.0.1.1", 40000, 5201, isn - 1, 0, 0x02, 0),
           pcap_record(0.01, "10.0.1.1", "10.0.0.1", 5201, 40000, 7, isn, 0x12, 0)]
    sent, n = 0, 0
    per_s = total / 40.0
    while sent < total:
        size = min(mss, total - sent)
        t = 0.02 + sent / per_s
        out.append(pcap_record(t, "10.0.0.1", "10.0.1.1", 40000, 5201, isn + sent, 8, 0x18, size))
        sent += size
        n += 1
        if n % 16 == 0 or sent == total:
            out.append(pcap_record(t + 0.01, "10.0.1.1", "10.0.0.1", 5201, 40000, 8, isn + sent,
                                   0x10, 0))
    return b"".join(out)


def test_pcap_analysis_counts_past_4_gib_of_sequence_space():
    """A flow that sends more than 4 GiB wraps TCP's 32-bit sequence space: the analysis
    counts on in 64 bits instead of taking what follows for retransmissions."""
    total = 5 * 2**30
    flows, losses = analyze_pcap(long_flow_pcap(total))
    assert losses == []
    (f,) = flows.values()
    assert (f["src"], f["dport"]) == ("10.0.0.1", 5201)
    assert f["bytes"] == total and f["retransmits"] == 0 and f["retrans_bytes"] == 0
    assert f["goodput_bps"] == pytest.approx(total * 8 / 40.0, rel=0.01)
    # one sample per ACK (of 16 segments), all 10 ms, across the wrap too
    assert f["rtt_samples"] == pytest.approx(total / 64000 / 16, abs=1)
    assert f["rtt_ms_min"] == pytest.approx(10.0, abs=0.01) and f["rtt_ms_p50"] == pytest.approx(10.0, abs=0.01)


def test_pcap_cut_short_or_not_a_pcap_is_a_loss_not_an_exception():
    data = long_flow_pcap(640000)
    whole, _ = analyze_pcap(data)
    cut = len(data) - 30
    flows, losses = analyze_pcap(data[:cut])
    assert losses == [f"pcap truncated at byte {len(data) - 70} of {cut}: 12 packets kept, "
                      "the rest lost"]
    assert list(flows) == list(whole)
    assert analyze_pcap(b"") == ({}, ["pcap: only 0 bytes, not even a pcap header (tcpdump "
                                      "wrote nothing)"])
    assert analyze_pcap(b"GIF89a" + data[6:]) == ({}, ["pcap: not a pcap file (magic 0x38464947)"])
    assert analyze_pcap(data[:20] + b"\x71\0\0\x01" + data[24:]) == \
        ({}, ["pcap: unsupported pcap link type 16777329"])


def test_percentiles_and_fairness():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == 50 and p["p99"] == 99 and p["min"] == 1 and p["max"] == 100
    assert percentiles([])["p50"] is None
    assert jain_index([1, 1, 1]) == 1.0 and abs(jain_index([1, 0, 0, 0]) - 0.25) < 1e-9


FLOW_CONTROL = {"snd_wnd": "tcpi_snd_wnd", "rwnd_limited_us": "tcpi_rwnd_limited",
                "sndbuf_limited_us": "tcpi_sndbuf_limited", "busy_time_us": "tcpi_busy_time",
                "delivered_ce": "tcpi_delivered_ce", "reordering": "tcpi_reordering"}


def test_flow_control_fields_agree_with_pyroute2():
    data = (DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()
    ours = [tcpinfo.decode_message(m) for m in messages(data)]
    for mine, ref in zip(ours, MarshalDiag().parse(data)):
        info = ref.get_attr("INET_DIAG_INFO")
        assert {c: mine[c] for c in FLOW_CONTROL} == {c: info[f] for c, f in FLOW_CONTROL.items()}
        assert mine["rcv_wnd"] == 65536           # this dump's kernel has it (6.2+)
    assert any(r["busy_time_us"] for r in ours)
    from testbed.results import TCPINFO_COLUMNS
    assert set(FLOW_CONTROL) | {"rcv_wnd"} <= set(TCPINFO_COLUMNS)


def _cut_tcp_info(msg: bytes, length: int) -> bytes:
    """``msg`` with its INET_DIAG_INFO attribute cut to ``length`` bytes (an older kernel's)."""
    out, off = bytearray(msg[:tcpinfo.INET_DIAG_MSG_SIZE]), tcpinfo.INET_DIAG_MSG_SIZE
    while off + 4 <= len(msg):
        alen, atype = struct.unpack_from("=HH", msg, off)
        payload = msg[off + 4: off + alen]
        if atype & 0x3FFF == tcpinfo.INET_DIAG_INFO:
            payload = payload[:length]
        out += struct.pack("=HH", 4 + len(payload), atype) + payload + b"\0" * (-len(payload) % 4)
        off += (alen + 3) & ~3
    return bytes(out)


def test_fields_an_older_kernel_does_not_send_are_empty_not_zero():
    msg = next(messages((DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()))
    row = tcpinfo.decode_message(_cut_tcp_info(msg, tcpinfo._TCP_INFO_END["snd_wnd"]))
    assert row["snd_wnd"] == 65536 and row["rcv_wnd"] is None
    row = tcpinfo.decode_message(_cut_tcp_info(msg, tcpinfo._TCP_INFO_END["delivered_ce"]))
    assert row["delivered_ce"] == 0 and row["snd_wnd"] is None and row["reordering"] == 3
