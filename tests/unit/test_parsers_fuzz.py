"""Fuzzing every reader of what a run leaves behind, from the seed files in tests/data:
truncations, flipped bytes and inserted garbage (a fixed seed, a bounded count, a few
seconds). A collector's reading is total (data and a list of losses, never an
exception); a driver's output that cannot be read fails its flow; a run directory
that cannot be read is a ResultsError. Any other exception is a bug in a parser."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any, Callable

import pytest

from testbed.analysis import load_runs, summarize
from testbed.analysis.metrics import METRICS
from testbed.analysis.synthetic import FakeFlow, write_run
from testbed.collect import tcpinfo
from testbed.collect.capture import analyze_pcap
from testbed.errors import TestbedError
from testbed.results import parse_output
from testbed.traffic.base import FlowResult
from testbed.traffic.builtin import parse_builtin
from testbed.traffic.iperf3 import parse_iperf3

DATA = Path(__file__).resolve().parents[1] / "data"
MUTATIONS = 300


def mutations(seed: bytes, rng: random.Random, count: int = MUTATIONS) -> list[tuple[str, bytes]]:
    """``count`` (description, mutated bytes) of ``seed``: truncated, bytes flipped,
    garbage inserted, a stretch cut out, or two of these."""
    def once(data: bytes) -> tuple[str, bytes]:
        kind = rng.choice(("truncate", "flip", "insert", "cut"))
        at = rng.randrange(len(data) + 1)
        if kind == "truncate":
            return f"truncate at {at}", data[:at]
        if kind == "flip":
            if not data:
                return "flip (empty)", data
            at = min(at, len(data) - 1)
            return f"flip byte {at}", data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1:]
        if kind == "insert":
            junk = rng.randbytes(rng.randrange(1, 17))
            return f"insert {junk!r} at {at}", data[:at] + junk + data[at:]
        n = rng.randrange(1, 33)
        return f"cut {n} at {at}", data[:at] + data[at + n:]
    out = []
    for _ in range(count):
        desc, data = once(seed)
        if rng.random() < 0.3:
            more, data = once(data)
            desc = f"{desc}, {more}"
        out.append((desc, data))
    return out


def fuzz(name: str, seed: bytes, read: Callable[[bytes], Any], rng: random.Random) -> list[Any]:
    """``read`` of every mutation of ``seed``; a TestbedError counts as an outcome, any
    other exception fails the test naming the mutation."""
    outcomes = []
    for i, (desc, data) in enumerate(mutations(seed, rng)):
        try:
            outcomes.append(read(data))
        except TestbedError as exc:
            outcomes.append(exc)
        except Exception as exc:  # noqa: BLE001 - the point: say which mutation broke it
            raise AssertionError(f"{name}, mutation {i} ({desc}): {type(exc).__name__}: "
                                 f"{exc}") from exc
    return outcomes


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


def spool_seed() -> bytes:
    data = (DATA / "sockdiag_tcp_cubic_bbr.bin").read_bytes()
    reads, off = [], 0
    while off < len(data):
        step = (struct.unpack_from("=I", data, off)[0] + 3) & ~3
        reads.append(data[off: off + step])
        off += step
    return tcpinfo.SPOOL_MAGIC + b"".join(struct.pack("=dHI", 1.0 + i, i % 2, len(r)) + r
                                          for i, r in enumerate(reads))


def test_fuzz_tcp_info_spool(rng):
    outcomes = fuzz("spool", spool_seed(), lambda d: tcpinfo.decode_spool(d, ["h1", "h2"]), rng)
    assert all(isinstance(o, tuple) for o in outcomes)          # total: never an exception
    assert sum(bool(losses) for _, losses in outcomes) > MUTATIONS // 3
    assert sum(len(rows) == 4 and not losses for rows, losses in outcomes) > 10


def test_fuzz_pcap(rng):
    outcomes = fuzz("pcap", (DATA / "lo_iperf3_bbr.pcap").read_bytes(), analyze_pcap, rng)
    assert all(isinstance(o, tuple) for o in outcomes)
    assert sum(bool(losses) for _, losses in outcomes) > MUTATIONS // 3
    assert sum(bool(flows) for flows, _ in outcomes) > MUTATIONS // 2


def read_driver_output(parse: Callable[[dict | None], FlowResult]) -> Callable[[bytes], FlowResult]:
    def read(data: bytes) -> FlowResult:
        value, why = parse_output(data, "out.json")
        res = parse(value)
        assert res.ok or res.error, "a failed flow says why"
        assert value is not None or why
        return res
    return read


@pytest.mark.parametrize("seed", ["iperf3_tcp_p2_cubic.json", "iperf3_udp_start_lost.json",
                                  "iperf3_interrupted.server.json"])
def test_fuzz_iperf3_output(rng, seed):
    good = json.loads((DATA / "iperf3_tcp_p2_cubic.json").read_text())
    protocol = "udp" if "udp" in seed else "tcp"
    as_client = read_driver_output(lambda v: parse_iperf3(v, None, name="f", protocol=protocol))
    as_server = read_driver_output(lambda v: parse_iperf3(good, v, name="f"))
    data = (DATA / seed).read_bytes()
    results = fuzz(seed, data, as_client, rng) + fuzz(seed, data, as_server, rng)
    assert all(isinstance(r, FlowResult) for r in results)
    assert {r.ok for r in results} == {True, False} or "udp" in seed


@pytest.mark.parametrize("seed, protocol, kind", [("builtin_tcp_bulk_bbr", "tcp", "bulk"),
                                                  ("builtin_rr", "tcp", "rr"),
                                                  ("builtin_udp", "udp", "bulk")])
def test_fuzz_builtin_agent_output(rng, seed, protocol, kind):
    client = json.loads((DATA / f"{seed}.client.json").read_text())
    server = json.loads((DATA / f"{seed}.server.json").read_text())

    def parse(c: Any, s: Any) -> FlowResult:
        return parse_builtin(c, s, name="f", protocol=protocol, kind=kind, size=None)
    results = fuzz(seed, (DATA / f"{seed}.client.json").read_bytes(),
                   read_driver_output(lambda v: parse(v, server)), rng)
    results += fuzz(seed, (DATA / f"{seed}.server.json").read_bytes(),
                    read_driver_output(lambda v: parse(client, v)), rng)
    assert all(isinstance(r, FlowResult) for r in results)
    assert {r.ok for r in results} == {True, False}


@pytest.mark.parametrize("file", ["result.json", "manifest.json"])
def test_fuzz_run_directory(tmp_path, rng, file):
    run = write_run(tmp_path, "r", variables={"cc": "bbr", "loss": "1%"}, samples=5,
                    flows=[FakeFlow("f", "bbr", 1e6, udp_loss=0.1), FakeFlow("g", "cubic", 2e6)])
    seed = (run / file).read_bytes()

    def read(data: bytes) -> Any:
        (run / file).write_bytes(data)
        summary = summarize(load_runs([run], include_suspect=True, include_partial=True),
                            ["cc"])
        return [row.estimate(m).mean for row in summary.rows for m in METRICS]
    outcomes = fuzz(file, seed, read, rng)
    errors = [o for o in outcomes if isinstance(o, TestbedError)]
    assert errors and len(errors) < len(outcomes)     # both kinds of outcome were reached
    assert all(str(run / file) in str(e) or "no runs" in str(e) or "left out" in str(e)
               for e in errors)
