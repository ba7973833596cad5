"""A run whose collectors lost data keeps everything else and says what was lost:
each collector's reading is total, the run records the losses (summary.data_loss,
suspect with a reason) instead of losing its result.json to an exception. No root:
``run.gather.gather`` is fed the files a run leaves, damaged."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

from testbed.collect import capture, hostload, qdisc, tcpinfo
from testbed.run.collectors import Collectors
from testbed.run.gather import gather
from testbed.traffic import FlowPlan
from testbed.traffic.builtin import BuiltinDriver
from testbed.traffic.iperf3 import Iperf3Driver
from testbed.workload import Flow

DATA = Path(__file__).resolve().parents[1] / "data"


def spool_of_the_real_dump() -> bytes:
    data = (DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()
    reads, off = [], 0
    while off < len(data):
        length = struct.unpack_from("=I", data, off)[0]
        reads.append(data[off: off + ((length + 3) & ~3)])
        off += (length + 3) & ~3
    return tcpinfo.SPOOL_MAGIC + b"".join(struct.pack("=dHI", 1.0 + i, 0, len(r)) + r
                                          for i, r in enumerate(reads))


def collect(tmp_path: Path, *, spool: bytes, pcap: bytes, iperf3_client: bytes,
            cap_stats: dict, qdisc_error: BaseException | None = None,
            host_error: BaseException | None = None) -> tuple[list[dict], dict]:
    run_dir = tmp_path / "run"
    raw = run_dir / "raw"
    raw.mkdir(parents=True)
    (raw / "tcp_info.spool").write_bytes(spool)
    (raw / "capture-r1-eth2.pcap").write_bytes(pcap)
    plans = []
    for i, (name, driver) in enumerate((("bulk", Iperf3Driver()), ("rr", BuiltinDriver()))):
        plans.append((FlowPlan(flow=Flow(name, "h1", "h3"), port=5201 + i, src_ip="10.0.0.1",
                               dst_ip="10.0.1.1", seconds=1.0, out_dir=raw), driver))
    (raw / "bulk.client.json").write_bytes(iperf3_client)
    shutil.copy(DATA / "builtin_tcp_bulk_bbr.client.json", raw / "rr.client.json")
    shutil.copy(DATA / "builtin_tcp_bulk_bbr.server.json", raw / "rr.server.json")
    row = {**dict.fromkeys(qdisc.CSV_COLUMNS, 0), "t": 0.5, "node": "r1", "ifname": "eth2",
           "kind": "tbf", "handle": "1:", "parent": "ffff:ffff"}
    col = Collectors(raw, hostload.HostLoadSampler(error=host_error),
                     captures=[(None, raw / "capture-r1-eth2.pcap", "r1:eth2")],  # type: ignore[list-item]
                     cap_stats=cap_stats,
                     qs=qdisc.QdiscSampler([], rows=[row], error=qdisc_error),
                     sampler=SimpleNamespace(spool=raw / "tcp_info.spool", labels=["h1"]))  # type: ignore[arg-type]
    gathered = gather(run_dir, plans, col, 0.0, {}, [])
    return gathered.flows, gathered.summary


def test_a_run_with_whole_collectors_records_no_loss(tmp_path):
    pcap = capture._PCAP_HDR.pack(0xA1B2C3D4, 2, 4, 0, 0, 96, 1)
    flows, summary = collect(tmp_path, spool=spool_of_the_real_dump(), pcap=pcap,
                             iperf3_client=(DATA / "iperf3_tcp_p2_cubic.json").read_bytes(),
                             cap_stats={"r1:eth2": {"captured": 5, "received_by_filter": 5,
                                                    "lost": None}})
    assert summary["data_loss"] == [] and not summary["suspect"]
    assert [f["ok"] for f in flows] == [True, True]


def test_every_collector_fails_alone_and_the_run_says_what_was_lost(tmp_path):
    spool = spool_of_the_real_dump()
    last_record = spool.rindex(struct.pack("=d", 4.0))      # the 4th of 4 samples
    flows, summary = collect(
        tmp_path, spool=spool[:-7], pcap=b"\x00" * 10,
        iperf3_client=b'{"start": {}, "end": {"sum_sent": {"bytes": "\xff\xfe"}}}',
        cap_stats={"r1:eth2": {"lost": "3 of the 40 packets its filter passed were not written "
                                       "(37 captured)"}},
        qdisc_error=OSError(19, "No such device"), host_error=ZeroDivisionError("no CPUs"))
    cut = len(spool) - 7
    assert summary["data_loss"] == [
        f"tcp_info spool truncated at byte {last_record} of {cut}: 3 samples kept, the rest lost",
        "capture r1:eth2: pcap: only 10 bytes, not even a pcap header (tcpdump wrote nothing)",
        "capture r1:eth2: 3 of the 40 packets its filter passed were not written (37 captured)",
        "qdisc sampler failed after 0.5 s: OSError: [Errno 19] No such device; 1 samples kept, "
        "the rest lost",
        "host load sampler failed before its first sample: ZeroDivisionError: no CPUs; 0 samples "
        "kept, the rest lost",
    ]
    assert summary["suspect"]
    assert [r for r in summary["suspect_reasons"] if r.startswith("data lost: ")] == \
        [f"data lost: {x}" for x in summary["data_loss"]]
    bulk, rr = flows
    assert not bulk["ok"] and "bulk.client.json is not UTF-8 text (byte" in bulk["error"]
    assert rr["ok"] and rr["bytes"] > 0             # the other flow's result is kept
    assert (tmp_path / "run" / "tcp_info.csv").exists()


def test_tcpdump_counters_and_what_they_say_was_lost():
    text = ("tcpdump: listening on eth2, link-type EN10MB (Ethernet), snapshot length 128 bytes\n"
            "13128 packets captured\n13621 packets received by filter\n0 packets dropped by kernel\n")
    counts = capture.capture_counts(text)
    assert counts == {"captured": 13128, "received_by_filter": 13621, "dropped_by_kernel": 0,
                      "dropped_by_interface": None}
    assert capture.capture_loss({**counts, "returncode": 0}) == \
        "493 of the 13621 packets its filter passed were not written (13128 captured)"
    whole = capture.capture_counts("19 packets captured\n19 packets received by filter\n"
                                   "0 packets dropped by kernel\n")
    assert capture.capture_loss({**whole, "returncode": 0}) is None
    assert capture.capture_loss({**whole, "dropped_by_kernel": 4, "returncode": 0}) == \
        "the kernel dropped 4 packets"
    assert "no packet counts" in capture.capture_loss({**capture.capture_counts(""), "returncode": 0})
    assert "was killed" in capture.capture_loss({**whole, "returncode": -9})


def test_the_run_waits_for_tcpdump_to_listen_and_says_why_it_did_not(tmp_path):
    import subprocess

    import pytest

    from testbed.errors import WorkloadError

    def fake_tcpdump(script: str) -> tuple[subprocess.Popen, Path]:
        pcap = tmp_path / "c.pcap"
        with open(pcap.with_suffix(".stderr"), "wb") as err:
            return subprocess.Popen(["sh", "-c", script], stderr=err), pcap
    proc, pcap = fake_tcpdump("sleep 0.2; echo 'tcpdump: listening on eth2, link-type EN10MB' >&2; "
                              "sleep 5")
    capture.wait_capturing(proc, pcap, "r1:eth2")
    assert proc.poll() is None
    proc.kill()
    proc.wait()
    proc, pcap = fake_tcpdump("echo 'tcpdump: eth9: No such device exists' >&2; exit 1")
    with pytest.raises(WorkloadError, match=r"capture on r1:eth9: tcpdump exited \(status 1\) "
                                            "before capturing: tcpdump: eth9: No such device"):
        capture.wait_capturing(proc, pcap, "r1:eth9")
