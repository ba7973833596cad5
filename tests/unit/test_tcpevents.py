"""tcp events: decoding a spool recorded from this kernel, counting per flow, filters, sizes,
and the trace instances testbed owns (on a stand-in tracefs directory)."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

import pytest

from testbed.collect import tcpevents, tcpevents_parse
from testbed.kernel import tracefs

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture(scope="module")
def sample() -> tuple[dict, bytes]:
    """A spool recorded by tests/integration/tcpevents_net.py (capture_sample): a sender
    in bursts through a link that drops 10 %, and everything for 300 ms; with the
    sender's own tcp_info read after its last ACK."""
    meta = json.loads((DATA / "tcpevents_sample.json").read_text())
    return meta, (DATA / "tcpevents_sample.spool").read_bytes()


def _sender(meta: dict, rows: list[dict]) -> dict:
    flows = [f for f in tcpevents_parse.flow_counts(rows)
             if (f["src"], f["sport"], f["dport"]) == (meta["src"], meta["sport"], meta["port"])]
    assert len(flows) == 1
    return flows[0]


def test_recorded_spool_decodes_whole(sample):
    meta, data = sample
    decoded = tcpevents_parse.decode_spool(data, meta["t0"])
    assert decoded.problems == [] and decoded.unreadable_bytes == 0
    assert decoded.unknown_records == 0 and decoded.lost == 0
    assert decoded.pages == meta["trace"]["pages"]
    assert decoded.events == meta["trace"]["read"]     # the kernel's count of events read
    times = [r["t"] for r in decoded.rows]
    assert times == sorted(times) and times[0] > 0          # t0 was taken before start
    assert {r["dport"] for r in decoded.rows} | {r["sport"] for r in decoded.rows} >= {meta["port"]}
    assert all(meta["port"] in (r["sport"], r["dport"]) for r in decoded.rows)   # the filter held
    assert {r["event"] for r in decoded.rows} == {"probe", "cong_state_set", "retransmit_skb",
                                                  "destroy_sock"}


def test_recorded_retransmissions_match_the_sockets_tcp_info(sample):
    meta, data = sample
    flow = _sender(meta, tcpevents_parse.decode_spool(data, meta["t0"]).rows)
    assert flow["retransmissions"] == meta["total_retrans"] > 0
    assert flow["fast_recoveries"] >= 1          # the random drops
    assert flow["loss_episodes"] >= 1            # the 300 ms outage: a timeout
    assert flow["rtos"] >= flow["loss_episodes"]


def test_recorded_probe_rows_carry_the_socket_state(sample):
    meta, data = sample
    rows = tcpevents_parse.decode_spool(data, meta["t0"]).rows
    acks = [r for r in rows if r["event"] == "probe" and r["src"] == meta["src"]]
    assert acks and all(r["dst"] == meta["dst"] and r["cwnd"] >= 1 and r["srtt_us"] > 0
                        for r in acks)
    assert all((r["snd_nxt"] - r["snd_una"]) % (1 << 32) < 1 << 20 for r in acks)
    assert len({r["cookie"] for r in acks}) == 1


def test_damaged_spools_keep_what_they_can():
    assert tcpevents_parse.decode_spool(b"not a spool").problems
    meta = json.loads((DATA / "tcpevents_sample.json").read_text())
    data = (DATA / "tcpevents_sample.spool").read_bytes()
    whole = tcpevents_parse.decode_spool(data, meta["t0"])
    cut = tcpevents_parse.decode_spool(data[:len(data) - 3000], meta["t0"])
    assert 0 < len(cut.rows) < len(whole.rows) and cut.unreadable_bytes > 0


def _state(t: float, state: str) -> dict:
    return {"t": t, "event": "cong_state_set", "src": "10.0.0.1", "sport": 1, "dst": "10.0.0.2",
            "dport": 2, "ca_state": state}


def test_flow_counts_count_entries_into_recovery_and_loss():
    states = ["open", "disorder", "recovery", "recovery", "open", "loss", "loss", "open",
              "recovery", "open"]
    rows = [_state(i, s) for i, s in enumerate(states)]
    rows.append(dict(_state(20, "x"), event="retransmit_skb", err=0))
    rows.append(dict(_state(21, "x"), event="retransmit_skb", err=-16))   # -EBUSY: not sent
    rows.append(dict(_state(22, "x"), event="probe", cwnd=42))
    (flow,) = tcpevents_parse.flow_counts(rows)
    assert flow["fast_recoveries"] == 2 and flow["loss_episodes"] == 1 and flow["rtos"] == 2
    assert flow["retransmissions"] == 1 and flow["max_cwnd"] == 42
    assert (flow["first_t"], flow["last_t"]) == (0, 22)


def test_port_filter_expression():
    assert tcpevents.port_filter({5201}) == "sport == 5201 || dport == 5201"
    assert tcpevents.port_filter({5201, 5202, 5203, 6000}) == (
        "(sport >= 5201 && sport <= 5203) || sport == 6000 || "
        "(dport >= 5201 && dport <= 5203) || dport == 6000")
    with pytest.raises(ValueError):
        tcpevents.port_filter(set())
    with pytest.raises(ValueError):
        tcpevents.port_filter({70000})


def test_buffer_size_follows_the_event_rate_and_is_capped():
    assert tcpevents.buffer_kb(0, 10, cpus=2) == 512                     # the floor
    assert tcpevents.buffer_kb(10_000, 2, cpus=2) == int(10_000 * 2 * tcpevents.RECORD_BYTES / 1024)
    assert tcpevents.buffer_kb(100_000, 10, cpus=2) == 262144 // 2       # 137 MiB wanted: the cap
    assert tcpevents.buffer_kb(100_000, 10, cpus=64) == 262144 // 64     # shared by all CPUs
    assert tcpevents.buffer_kb(100_000, 10, cpus=2, cap_total_kb=2048) == 1024


def test_events_csv_has_the_columns_in_order(tmp_path):
    path = tmp_path / "tcp_events.csv"
    tcpevents_parse.write_events_csv([dict(_state(0.5, "loss"), cpu=1)], path)
    header, line = path.read_text().splitlines()
    assert header.split(",") == list(tcpevents_parse.CSV_COLUMNS)
    row = dict(zip(header.split(","), line.split(",")))
    assert row["ca_state"] == "loss" and row["t"] == "0.5" and row["cwnd"] == ""


# ---- tracefs instances, on a directory standing in for tracefs -----------------------------

@pytest.fixture
def fake_root(tmp_path) -> Path:
    (tmp_path / "tracing" / "instances").mkdir(parents=True)
    return tmp_path / "tracing"


def test_create_journals_before_it_makes_the_instance(fake_root, tmp_path):
    journal = tmp_path / "run"
    name = f"{tracefs.PREFIX}lab.run1"
    (fake_root / "instances" / name).mkdir()            # mkdir will fail...
    with pytest.raises(FileExistsError):
        tracefs.create(fake_root, journal, name)
    assert tracefs.journalled(journal) == [name]        # ...and the name was journalled first


def test_owned_instances_by_prefix_and_journal_never_foreign(fake_root, tmp_path):
    journal = tmp_path / "run"
    mine = tracefs.create(fake_root, journal, f"{tracefs.PREFIX}lab.run1").name
    other_lab = f"{tracefs.PREFIX}other.run1"
    (fake_root / "instances" / other_lab).mkdir()
    (fake_root / "instances" / "perf-tool").mkdir()        # foreign
    with open(journal / tracefs.JOURNAL_FILE, "a") as f:   # a journal naming a foreign one
        f.write("perf-tool\n")
    assert tracefs.owned_instances(fake_root, f"{tracefs.PREFIX}lab.") == [mine]
    assert tracefs.owned_instances(fake_root, f"{tracefs.PREFIX}nope.", journal) == [mine]
    assert tracefs.owned_instances(fake_root) == sorted([mine, other_lab])
    with pytest.raises(ValueError):
        tracefs.owned_instances(fake_root, "perf")
    with pytest.raises(ValueError):
        tracefs.remove(fake_root, "perf-tool")
    assert tracefs.remove(fake_root, mine) and not tracefs.remove(fake_root, mine)
    assert sorted(os.listdir(fake_root / "instances")) == sorted([other_lab, "perf-tool"])
    with pytest.raises(ValueError):
        tracefs.create(fake_root, journal, "no-prefix")


def test_probe_says_why_not(tmp_path, fake_root):
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    found = tracefs.probe(("tcp/tcp_probe",), mounts)
    assert not found.usable and found.problems == ["tracefs is not mounted"]
    assert found.fix == tracefs.MOUNT_FIX
    mounts.write_text(f"sysfs /sys sysfs rw 0 0\nnodev {fake_root} tracefs rw 0 0\n")
    (fake_root / "events" / "tcp" / "tcp_probe").mkdir(parents=True)
    (fake_root / "events" / "tcp" / "tcp_probe" / "format").write_text("name: tcp_probe\n")
    found = tracefs.probe(("tcp/tcp_probe", "tcp/tcp_cong_state_set"), mounts)
    assert found.usable and found.missing() == ["tcp/tcp_cong_state_set"]
    assert found.problems == ["this kernel has no tcp/tcp_cong_state_set tracepoint"]


def test_per_cpu_stats_are_parsed():
    text = ("entries: 3\noverrun: 7\ncommit overrun: 0\nbytes: 420\n"
            "oldest event ts:  1234.5\nnow ts:  1240.0\ndropped events: 2\nread events: 99\n")
    assert tracefs.parse_stats(text) == {"entries": 3, "overrun": 7, "commit_overrun": 0,
                                         "bytes": 420, "dropped": 2, "read": 99}


def _synthetic_spool(unfiltered: list[str]) -> bytes:
    """A spool of cong_state_set records on two CPUs, built to the documented layout."""
    from test_tcpevents_ringbuffer import CONG_STATE_FORMAT, _data, _page
    from testbed.kernel import ringbuffer as rb
    fmt = rb.parse_format(CONG_STATE_FORMAT)

    def record(sport: int, dport: int, state: int) -> bytes:
        rec = bytearray(64)
        struct.pack_into("<HHHH", rec, 0, fmt.id, 0, 0, 0)
        struct.pack_into("<HHH", rec, 16, sport, dport, socket.AF_INET)
        rec[22:26], rec[26:30], rec[62] = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), state
        return bytes(rec)
    cpu0 = _page(1_000, _data(0, record(40000, 5201, 3)) + _data(20, record(40000, 5201, 0)))
    cpu1 = _page(1_010, _data(0, record(1111, 2222, 4)) + _data(5, record(5201, 40000, 4)))
    header = json.dumps({"version": 1, "layout": [0, 8, 8, 16], "ports": [5201],
                         "unfiltered": unfiltered, "formats": [fmt.as_dict()]}).encode()
    return (tcpevents.SPOOL_MAGIC + tcpevents.SPOOL_HEADER_LENGTH.pack(len(header)) + header
            + b"".join(tcpevents.SPOOL_RECORD.pack(cpu, len(p)) + p for cpu, p in ((0, cpu0), (1, cpu1))))


def test_cpus_merge_in_time_order_and_unfiltered_events_are_filtered_here():
    rows = tcpevents_parse.decode_spool(_synthetic_spool([]), t0=0).rows
    assert [(round(r["t"] * 1e9), r["cpu"], r["ca_state"]) for r in rows] == [
        (1_000, 0, "recovery"), (1_010, 1, "loss"), (1_015, 1, "loss"), (1_020, 0, "open")]
    # an event the kernel could not filter by port is filtered after decoding
    decoded = tcpevents_parse.decode_spool(_synthetic_spool(["tcp_cong_state_set"]), t0=0)
    rows = decoded.rows
    assert [r["sport"] for r in rows] == [40000, 5201, 40000] and decoded.foreign == 1
    assert rows[0]["src"] == "10.0.0.1" and rows[0]["dst"] == "10.0.0.2"


def test_export_streams_the_same_rows_and_counts(sample, tmp_path):
    meta, data = sample
    spool = tmp_path / "s.spool"
    spool.write_bytes(data)
    decoded, flows = tcpevents_parse.export(spool, tmp_path / "tcp_events.csv", meta["t0"])
    whole = tcpevents_parse.decode_spool(data, meta["t0"])
    lines = (tmp_path / "tcp_events.csv").read_text().splitlines()
    assert len(lines) - 1 == decoded.events == len(whole.rows)
    assert flows == tcpevents_parse.flow_counts(whole.rows)
    assert decoded.as_dict() == whole.as_dict()
    spool.write_bytes(b"")
    decoded, flows = tcpevents_parse.export(spool, tmp_path / "empty.csv", 0.0)
    assert decoded.problems and flows == [] and (tmp_path / "empty.csv").read_text().strip()


def test_doctor_says_whether_tcp_events_can_be_recorded(tmp_path, fake_root):
    from testbed.realize.doctor import tcp_events_check
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    check = tcp_events_check(tracefs.probe(tracefs.TCP_EVENTS, mounts))
    # not a warning with a manual fix (a new user followed it): each run mounts it itself
    assert check.status == "ok" and "each run mounts it" in check.detail and not check.fix
    mounts.write_text(f"nodev {fake_root} tracefs rw 0 0\n")
    for event in tracefs.TCP_EVENTS[:-1]:
        (fake_root / "events" / event).mkdir(parents=True)
        (fake_root / "events" / event / "format").write_text("")
    check = tcp_events_check(tracefs.probe(tracefs.TCP_EVENTS, mounts))
    assert check.status == "warn" and "tcp/tcp_destroy_sock" in check.detail
    (fake_root / "events" / tracefs.TCP_EVENTS[-1]).mkdir(parents=True)
    (fake_root / "events" / tracefs.TCP_EVENTS[-1] / "format").write_text("")
    assert tcp_events_check(tracefs.probe(tracefs.TCP_EVENTS, mounts)).status == "ok"


def test_collector_refuses_to_start_without_tracefs_and_leaves_nothing(tmp_path):
    from testbed.errors import PreflightError
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\n")
    collector = tcpevents.TcpEventsCollector(tmp_path / "run", f"{tracefs.PREFIX}x.y",
                                             frozenset({5201}), tmp_path / "spool", mounts=mounts)
    with pytest.raises(PreflightError, match="tracefs is not mounted.*mount -t tracefs"):
        collector.start()
    assert not (tmp_path / "run").exists() and not (tmp_path / "spool").exists()
    assert collector.stop().pages == 0


def test_down_removes_only_its_own_instances(tmp_path, fake_root):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"nodev {fake_root} tracefs rw 0 0\n")
    journal = tmp_path / "lab-journal"
    tracefs.create(fake_root, journal, tracefs.instance_name("lab", "run1"))
    tracefs.create(fake_root, tmp_path / "other", tracefs.instance_name("lab2", "run1"))
    (fake_root / "instances" / "perf-tool").mkdir()
    assert tracefs.remove_owned("lab", journal, mounts) == ["testbed.lab.run1"]
    assert sorted(os.listdir(fake_root / "instances")) == ["perf-tool", "testbed.lab2.run1"]
    assert tracefs.remove_owned(None, None, mounts) == ["testbed.lab2.run1"]     # clean
    assert os.listdir(fake_root / "instances") == ["perf-tool"]
    mounts.write_text("")
    assert tracefs.remove_owned(None, None, mounts) == []                        # no tracefs


def test_result_fields_are_plain_json(sample, tmp_path):
    meta, data = sample
    decoded = tcpevents_parse.decode_spool(data, meta["t0"])
    stats = tcpevents.TraceStats(512, per_cpu={0: {"dropped": 3, "overrun": 1}})
    fields = tcpevents_parse.result_fields(stats, decoded, tcpevents_parse.flow_counts(decoded.rows),
                                     ["tcp/tcp_rcvbuf_grow"])
    back = json.loads(json.dumps(fields))
    assert back["trace"]["dropped"] == 3 and back["trace"]["overrun"] == 1
    assert back["decode"]["events"] == len(decoded.rows)
    assert back["missing_events"] == ["tcp/tcp_rcvbuf_grow"] and len(back["flows"]) == 2


def test_export_names_each_row_and_count_by_its_flow(sample, tmp_path):
    meta, data = sample
    spool = tmp_path / "s.spool"
    spool.write_bytes(data)
    _, flows = tcpevents_parse.export(spool, tmp_path / "e.csv", meta["t0"], {meta["port"]: "bulk"})
    header, *lines = (tmp_path / "e.csv").read_text().splitlines()
    assert header.split(",")[0] == "flow" and all(line.startswith("bulk,") for line in lines)
    assert sorted(f["flow"] for f in flows) == ["bulk", "bulk"]     # sender and receiver socket


def labelled_sample(sample, tmp_path) -> tuple[dict, Path, list[dict], dict]:
    """(meta, the spool file, its per-socket counts labelled by port, the sender's)."""
    meta, data = sample
    spool = tmp_path / "s.spool"
    spool.write_bytes(data)
    _, flows = tcpevents_parse.export(spool, tmp_path / "a.csv", meta["t0"],
                                      {meta["port"]: "bulk"})
    return meta, spool, flows, next(f for f in flows if f["dport"] == meta["port"])


def test_events_of_another_namespaces_socket_on_the_same_port_are_not_the_flows(sample, tmp_path):
    """Another testbed on the host may run a flow with the same addresses and port: the
    tracepoints see it too. Its events counted as this run's (a new user saw 42
    retransmissions for a flow that had 1). Where tcp_info saw the flow's sockets, an
    event of another socket is left without a flow and counted as other_sockets."""
    from testbed.run.summary import event_counts
    meta, spool, all_flows, sender = labelled_sample(sample, tmp_path)
    port = meta["port"]
    ours = {"bulk": {(sender["src"], sender["sport"], sender["dst"], sender["dport"])}}
    decoded, flows = tcpevents_parse.export(spool, tmp_path / "e.csv", meta["t0"],
                                            {port: "bulk"}, ours)
    # both ends of the sampled connection are the flow's
    assert sorted(f["flow"] for f in flows) == ["bulk", "bulk"] and decoded.other_sockets == 0
    # a flow whose sockets tcp_info saw are others: none of these events is its
    decoded, flows = tcpevents_parse.export(spool, tmp_path / "o.csv", meta["t0"], {port: "bulk"},
                                            {"bulk": {("10.9.9.9", 1, "10.9.9.8", port)}})
    assert decoded.other_sockets == decoded.events > 0
    assert decoded.as_dict()["other_sockets"] == decoded.events
    assert all(line.startswith(",") for line in (tmp_path / "o.csv").read_text().splitlines()[1:])
    plan = type("Plan", (), {"src_ip": sender["src"], "port": port,
                             "flow": type("F", (), {"name": "bulk"})})()
    assert event_counts(plan, flows)["sockets"] == 0
    assert event_counts(plan, all_flows)["sockets"] == 1


def test_a_runs_sampled_sockets_come_from_its_tcp_info_rows_by_port(sample, tmp_path):
    """The sockets handed to ``export`` are read off the tcp_info rows as the sampler
    decodes them (no ``flow`` key: the first version looked for one, found none, and
    filtered nothing: a second new user still saw another testbed's retransmissions)."""
    from testbed.run.gather import sampled_sockets
    meta, spool, all_flows, sender = labelled_sample(sample, tmp_path)
    port = meta["port"]
    ours = {"node": "h1", "src": sender["src"], "sport": sender["sport"], "dst": sender["dst"],
            "dport": port, "cwnd": 10}
    other = {**ours, "sport": 1, "dport": port + 1}
    plan = type("Plan", (), {"port": port, "flow": type("F", (), {"name": "bulk"})})()
    sockets = sampled_sockets([ours, other], [(plan, None)])
    assert sockets == {"bulk": {(sender["src"], sender["sport"], sender["dst"], port)}}
    foreign = sampled_sockets([{**ours, "src": "10.9.9.9"}], [(plan, None)])
    decoded, flows = tcpevents_parse.export(spool, tmp_path / "o.csv", meta["t0"],
                                            {port: "bulk"}, foreign)
    assert decoded.other_sockets == decoded.events and not any(f.get("flow") for f in flows)


def test_probe_wants_the_mono_clock(tmp_path, fake_root):
    mounts = tmp_path / "mounts"
    mounts.write_text(f"nodev {fake_root} tracefs rw 0 0\n")
    (fake_root / "trace_clock").write_text("[local] global counter uptime perf\n")
    found = tracefs.probe(("tcp/tcp_probe",), mounts)
    assert not found.usable and "mono" in found.problems[0]
    (fake_root / "trace_clock").write_text("[local] global mono mono_raw\n")
    assert tracefs.probe(("tcp/tcp_probe",), mounts).problems == [
        "this kernel has no tcp/tcp_probe tracepoint"]


def test_addresses_of_both_families_and_both_layouts():
    v6 = socket.inet_pton(socket.AF_INET6, "fd00::2")
    sockaddr6 = struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", 5201, 0) + v6 + b"\0" * 4
    sockaddr4 = (struct.pack("<H", socket.AF_INET) + struct.pack(">H", 40000)
                 + socket.inet_aton("10.0.0.1")).ljust(28, b"\0")
    row: dict = {}
    tcpevents_parse._addresses({"saddr": sockaddr4, "daddr": sockaddr6}, row)     # tcp_send_reset
    assert row == {"src": "10.0.0.1", "sport": 40000, "dst": "fd00::2", "dport": 5201}
    row = {}
    tcpevents_parse._addresses({"family": socket.AF_INET6, "saddr": b"\0" * 4, "daddr": b"\0" * 4,
                          "saddr_v6": v6, "daddr_v6": v6, "sport": 1, "dport": 2}, row)
    assert row == {"src": "fd00::2", "dst": "fd00::2", "sport": 1, "dport": 2}


def test_a_damaged_header_is_a_problem_not_a_crash(sample):
    _, data = sample
    magic, length = tcpevents.SPOOL_MAGIC, tcpevents.SPOOL_HEADER_LENGTH
    for header in (b'{"version": 1}', b'{"version": 2}', b"[1, 2]", b"{not json",
                   b'{"version": 1, "layout": [0, 8], "formats": [], "ports": [], "unfiltered": []}'):
        decoded = tcpevents_parse.decode_spool(magic + length.pack(len(header)) + header)
        assert decoded.rows == [] and len(decoded.problems) == 1, header
        assert "header" in decoded.problems[0]


def test_an_instance_a_live_run_still_reads_is_left_to_it_not_an_error(fake_root, tmp_path,
                                                                      monkeypatch):
    # down or clean while a run still reads its buffer: the kernel refuses rmdir (EBUSY);
    # before, that OSError ended the teardown half done
    import errno
    mine = tracefs.create(fake_root, tmp_path / "run", f"{tracefs.PREFIX}lab.run1").name
    real_rmdir = Path.rmdir

    def busy(self):
        if self.name == mine:
            raise OSError(errno.EBUSY, "Device or resource busy")
        return real_rmdir(self)
    monkeypatch.setattr(Path, "rmdir", busy)
    assert tracefs.remove(fake_root, mine) is False
    monkeypatch.setattr(Path, "rmdir", lambda self: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(OSError):
        tracefs.remove(fake_root, mine)


def test_the_servers_listening_socket_is_the_flows_too():
    """Its resets and its destruction carry no peer (0.0.0.0:0): they belong to the flow
    whose connections end at its address and port (the real run's test found them
    left without a flow)."""
    sockets = {("10.0.0.1", 41023, "10.0.0.6", 5201)}
    listener = {"src": "10.0.0.6", "sport": 5201, "dst": "0.0.0.0", "dport": 0}
    assert tcpevents_parse._one_of(listener, sockets)
    assert not tcpevents_parse._one_of({**listener, "src": "10.0.0.7"}, sockets)
    assert not tcpevents_parse._one_of({**listener, "dst": "10.0.0.9", "dport": 1}, sockets)
