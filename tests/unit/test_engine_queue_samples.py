"""The link engine's queues in a run (no root): the engine's status made into qdisc.csv rows,
samples it did not answer counted, and compare's queue metrics over them."""

from __future__ import annotations

import json
import time

from testbed.analysis import load_runs, summarize
from testbed.analysis.metrics import METRICS, RunView, backlog_series
from testbed.analysis.synthetic import FakeFlow, write_run
from testbed.collect.qdisc import QdiscSampler, engine_rows
from testbed.results import QDISC_COLUMNS, write_table
from testbed.run.summary import qdisc_drops


def lane(sent: int, tail: int, aqm: int, marks: int, backlog: int, sojourn: float) -> dict:
    """One queue of engine.queues as the engine writes it (a bottleneck with codel)."""
    return {"aqm": "codel", "sent": sent, "tail_drops": tail, "aqm_drops": aqm, "marks": marks,
            "backlog_bytes": backlog, "qlen": backlog // 1514, "sojourn_ms_mean": 2.5,
            "sojourn_ms_max": 9.0, "sojourn_ms_now": sojourn}


def queues(*lanes: tuple[str, dict]) -> dict:
    """engine.queues's queues: only the lanes where the engine is the bottleneck."""
    return dict(lanes)


PLACES = {"tb-x-r1/4": ("r1", "eth1"), "tb-x-r2/5": ("r2", "eth1")}


def test_engine_rows_are_qdisc_rows_of_the_bottleneck_lanes_at_their_senders_egress():
    rows = engine_rows(1.5, queues(("tb-x-r1/4", lane(100, 2, 5, 7, 3028, 1.25)),
                                   ("tb-x-gone/9", lane(1, 0, 0, 0, 0, 0.0))), PLACES)
    assert rows == [{"t": 1.5, "node": "r1", "ifname": "eth1", "kind": "engine:codel",
                     "handle": "", "parent": "", "bytes": None, "packets": 100, "drops": 7,
                     "overlimits": None, "requeues": None, "backlog": 3028, "qlen": 2,
                     "marks": 7, "aqm_drops": 5, "sojourn_ms": 1.25}]
    assert set(rows[0]) == set(QDISC_COLUMNS)


class FakeEngine:
    """Answers every other request (the other one times out)."""

    def __init__(self) -> None:
        self.asked = 0
        self.error = None
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def ask(self) -> None:
        self.asked += 1

    def answer(self, deadline: float) -> dict | None:
        if self.asked % 2 == 0:
            time.sleep(max(0.0, deadline - time.monotonic()))
            return None
        return {"pid": 1, "stats_seq": self.asked,
                "queues": queues(("tb-x-r1/4", lane(10 * self.asked, 0, self.asked, 0, 1514, 0.5)))}


def test_the_sampler_counts_the_samples_the_engine_did_not_answer():
    engine = FakeEngine()
    sampler = QdiscSampler([], interval=0.01, engine=engine, engine_places=PLACES)
    sampler.start(time.monotonic())
    time.sleep(0.3)
    sampler.stop()
    stats = sampler.engine_stats()
    assert sampler.error is None and engine.closed
    assert stats["samples"] == engine.asked >= 4, stats
    assert stats["lost"] == engine.asked // 2 and stats["lost"] > 0, stats
    assert len(sampler.rows) == stats["samples"] - stats["lost"]
    assert all(r["kind"] == "engine:codel" for r in sampler.rows)
    assert QdiscSampler([], interval=0.01).engine_stats() is None   # no engine: nothing said


def engine_samples() -> list[dict]:
    """A run's qdisc.csv rows: the kernel's idle noqueue and the engine's codel queue."""
    rows = []
    for k in range(20):
        t = round(0.1 * (k + 1), 3)
        rows.append({"t": t, "node": "r1", "ifname": "eth1", "kind": "noqueue", "handle": "0:",
                     "parent": "ffff:ffff", "bytes": 0, "packets": 0, "drops": 0,
                     "backlog": 0, "qlen": 0})
        rows += engine_rows(t, queues(("tb-x-r1/4", lane(500 + 100 * k, 1, 10 + k, 3 * k,
                                                         1514 * (k % 4), round(0.1 * k, 3)))), PLACES)
    return rows


def test_drops_and_marks_of_the_engine_queue_are_counted_during_the_run():
    summary = qdisc_drops(engine_samples())
    assert summary["r1:eth1 engine:codel"] == {"drops": 19, "marks": 57, "aqm_drops": 19,
                                               "backlog_max": 4542, "sojourn_ms_max": 1.9}
    assert summary["r1:eth1 noqueue 0:"]["drops"] == 0


def test_compare_sees_the_engine_queue_drops_marks_backlog_and_sojourn(tmp_path):
    run = write_run(tmp_path, "run1", variables={}, flows=[FakeFlow("bulk", "cubic", 20e6)])
    rows = engine_samples()
    write_table(rows, QDISC_COLUMNS, run / "qdisc.csv")
    result = json.loads((run / "result.json").read_text())
    result["summary"]["qdisc_drops"] = qdisc_drops(rows)
    (run / "result.json").write_text(json.dumps(result))
    view = RunView(load_runs([tmp_path]).runs[0])
    label, series = backlog_series(view.run)
    assert label == "r1:eth1 engine:codel" and len(series) == 20
    values = {m: METRICS[m].fn(view, ["bulk"]) for m in
              ("drops", "marks", "backlog_p95", "sojourn_p50", "sojourn_p95")}
    assert values == {"drops": 19.0, "marks": 57.0, "backlog_p95": 4542.0,
                      "sojourn_p50": 0.0009, "sojourn_p95": 0.0018}, values
    row = summarize(load_runs([tmp_path])).rows[0]
    assert row.estimate("marks").mean == 57.0


def test_the_bottleneck_is_the_queue_that_moved_the_most_bytes_not_packets(tmp_path):
    """A bulk flow's ACK direction (both ends' engine queues under one aqm) carries as many
    packets as its data direction: ranked by packets, compare read the idle ACK queue's
    sojourn and backlog (0.0) for every AQM run. The engine reports bytes sent."""
    run = write_run(tmp_path, "run1", variables={}, flows=[FakeFlow("bulk", "cubic", 20e6)])
    rows = []
    for k in range(10):
        data = {**lane(100 * k, 0, 0, 0, 30_000, 6.0), "sent_bytes": 100 * k * 1514}
        acks = {**lane(101 * k, 0, 0, 0, 0, 0.0), "sent_bytes": 101 * k * 66}
        rows += engine_rows(0.1 * (k + 1), queues(("tb-x-r1/4", data), ("tb-x-r2/5", acks)),
                            PLACES)
    write_table(rows, QDISC_COLUMNS, run / "qdisc.csv")
    view = RunView(load_runs([tmp_path]).runs[0])
    label, _ = backlog_series(view.run)
    assert label == "r1:eth1 engine:codel"
    assert METRICS["sojourn_p50"].fn(view, ["bulk"]) == 0.006


def test_every_discipline_counts_the_bytes_it_sent():
    import random
    from testbed.emulation.bottleneck import Bottleneck, BottleneckConfig
    from testbed.emulation.fqcodel import FqCoDel
    config = BottleneckConfig(rate_bps=8e6, limit_bytes=100_000, aqm="codel")
    fifo = Bottleneck(config, random.Random(1))
    for t in range(3):
        fifo.arrive(t * 2_000_000, 1000, False)
    fq = FqCoDel(BottleneckConfig(rate_bps=8e6, limit_bytes=100_000, aqm="fq_codel"),
                 random.Random(1))
    for pid in range(3):
        fq.enqueue(0, pid, 700, b"f", False)
    fq.advance(10_000_000)
    assert fifo.status()["sent_bytes"] == 3000 and fq.status()["sent_bytes"] == 2100
