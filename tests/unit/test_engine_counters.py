"""The link engine's counters as its status reports them (no root: a lane on a fake socket):
``released`` counts packets, not verdict batches, and a bottleneck's backlog is as of the
status, not as of the last packet that arrived."""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from testbed.emulation.bottleneck import Bottleneck, BottleneckConfig
from testbed.emulation.delayline import DelayConfig, DelayLine
from testbed.emulation.engine import Engine, Lane, open_query, query_path
from testbed.emulation.enginectl import EngineFiles, QueueQueries

from engine_fakes import RecordingSocket

MS = 1_000_000


def engine_with_lane(tmp_path, config: DelayConfig) -> tuple[Engine, Lane]:
    engine = Engine(str(tmp_path / "engine.json"), str(tmp_path / "engine.status"), 1, False)
    rng = random.Random(1)
    lane = Lane("tb-x-r1", 7, RecordingSocket(), DelayLine(config, rng),  # type: ignore[arg-type]
                bottleneck=None if config.bottleneck() is None else
                Bottleneck(config.bottleneck(), rng))
    engine.lanes[1000] = lane
    engine.by_key["tb-x-r1/7"] = lane
    return engine, lane


def test_released_counts_packets_not_batches(tmp_path):
    engine, lane = engine_with_lane(tmp_path, DelayConfig(delay_us=1000.0))
    for pid in range(1, 6):
        lane.line.arrive(pid, 0)
    engine.heap.append((lane.line.next_due(), 1000))
    lane.armed = True
    engine.release_due(2 * MS, bytearray(64))
    assert len(lane.sock.sent) == 1          # one batch verdict ...
    assert lane.counters["released"] == 5    # ... of five packets


def test_status_backlog_is_as_of_now_not_as_of_the_last_arrival(tmp_path):
    # 8 Mbit/s: a 1000-byte packet takes 1 ms on the wire
    config = DelayConfig(aqm="codel", rate_bps=8e6, limit_bytes=100_000)
    engine, lane = engine_with_lane(tmp_path, config)
    for _ in range(3):
        lane.bottleneck.arrive(0, 1000, False)
    assert lane.bottleneck.status()["backlog_bytes"] == 2000   # frozen until a packet comes
    late = lane.bottleneck.status(10 * MS)
    assert (late["backlog_bytes"], late["qlen"], late["sojourn_ms_now"]) == (0, 0, 0.0)
    mid = lane.bottleneck.status(int(1.5 * MS))
    assert (mid["backlog_bytes"], mid["qlen"], mid["sojourn_ms_now"]) == (1000, 1, 1.5)
    assert mid["sent"] == 3
    engine.write_status()      # long after those arrivals: the link is idle again
    status = json.loads((tmp_path / "engine.status").read_text())
    queue = status["lanes"]["tb-x-r1/7"]["bottleneck"]
    assert (queue["backlog_bytes"], queue["qlen"], queue["sojourn_ms_now"]) == (0, 0, 0.0)


def test_the_query_socket_answers_with_the_bottleneck_queues_only():
    # a short directory: a unix socket's path must fit in 108 bytes
    with tempfile.TemporaryDirectory(prefix="eq") as short:
        query_round_trip(Path(short))


def query_round_trip(tmp_path: Path) -> None:
    files = EngineFiles.of(tmp_path)
    files.directory.mkdir(parents=True)
    engine, lane = engine_with_lane(files.directory, DelayConfig(
        aqm="codel", rate_bps=8e6, limit_bytes=100_000))
    engine.by_key["tb-x-r2/9"] = Lane("tb-x-r2", 9, RecordingSocket(),  # type: ignore[arg-type]
                                      DelayLine(DelayConfig(delay_us=5000.0), random.Random(1)))
    lane.bottleneck.arrive(0, 1000, False)
    query = open_query(query_path(str(files.status)))
    asker = QueueQueries(tmp_path)
    try:
        asker.ask()
        asker.ask()               # the first answer is stale by then: skipped
        engine.answer_queries(query)
        got = asker.answer(time.monotonic() + 2)
        assert got is not None and got["request"] == "2", got
        assert list(got["queues"]) == ["tb-x-r1/7"], got
        assert got["queues"]["tb-x-r1/7"]["aqm"] == "codel" and got["queues"]["tb-x-r1/7"]["sent"] == 1
        asker.ask()               # nobody answers: lost, not waited for beyond the deadline
        assert asker.answer(time.monotonic() + 0.05) is None
    finally:
        asker.close()
        query.close()
    assert not asker.path.exists()


def test_an_fq_codel_lane_reports_its_queue_as_of_now(tmp_path):
    """The status and the run's queue queries read an fq_codel lane too (the FIFO's queue
    reading, applied to it, raised AttributeError: the status write and every sample failed)."""
    from testbed.emulation.fqcodel import FqCoDel
    config = DelayConfig(aqm="fq_codel", rate_bps=8e6, limit_bytes=100_000)
    engine, lane = engine_with_lane(tmp_path, config)
    lane.bottleneck = lane.fq = FqCoDel(config.bottleneck(), random.Random(1))
    now = time.monotonic_ns()
    for pid in range(1, 4):
        lane.fq.enqueue(now - 2 * MS, pid, 1000, b"flow-a", False)
    queue = engine.queues()["tb-x-r1/7"]
    assert queue["aqm"] == "fq_codel" and queue["qlen"] == 3 and queue["backlog_bytes"] == 3000
    assert queue["sojourn_ms_now"] >= 2.0
    engine.write_status()
    status = json.loads((tmp_path / "engine.status").read_text())
    assert status["lanes"]["tb-x-r1/7"]["bottleneck"]["qlen"] == 3
