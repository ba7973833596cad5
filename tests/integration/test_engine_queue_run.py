"""A run through the link engine's CoDel bottleneck (userspace backend): the run samples the
engine's queue beside the kernel's qdiscs, compare shows its drops, and link show afterwards
counts released packets (not verdict batches) and the idle queue's backlog as of now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tb_helpers import TIMING, run_cli

pytestmark = [pytest.mark.root, TIMING]

TOPO = """
name: engq
defaults: {cc: cubic}
nodes:
  h1: {kind: host}
  h2: {kind: host}
  r1: {kind: router}
  r2: {kind: router}
links:
  - endpoints: [h1, r1]
  - endpoints: [r1, r2]
    rate: 20mbit
    delay: 10ms
    queue: 8bdp
    forward: {aqm: codel}
  - endpoints: [r2, h2]
"""

WORKLOAD = """
name: engq
topology: {topo}
duration: 4s
sampling: {{qdisc: 50ms}}
flows:
  - {{name: bulk, from: h1, to: h2, cc: cubic}}
"""


def test_a_run_through_an_engine_codel_queue_shows_its_drops(tmp_path, clean_instance):
    topo = tmp_path / "topo.yaml"
    topo.write_text(TOPO)
    workload = tmp_path / "wl.yaml"
    workload.write_text(WORKLOAD.format(topo=topo))
    run_cli("up", str(topo), "--name", clean_instance, "--link-backend", "userspace")
    try:
        out = run_cli("run", str(workload), "--testbed", clean_instance, "--output",
                      str(tmp_path / "res"), "--quiet", timeout=120).stdout
        run_dir = Path(out.strip().splitlines()[-1])
        rows = [line.split(",") for line in (run_dir / "qdisc.csv").read_text().splitlines()]
        kinds = {r[rows[0].index("kind")] for r in rows[1:]}
        assert "engine:codel" in kinds, kinds
        result = json.loads((run_dir / "result.json").read_text())
        samples = result["summary"]["engine_queue_samples"]
        assert samples["samples"] >= 40 and samples["lost"] <= 0.05 * samples["samples"], samples
        (queue,) = [q for k, q in result["summary"]["qdisc_drops"].items()
                    if k.startswith("r1:") and k.endswith(" engine:codel")]
        assert queue["aqm_drops"] > 0 and queue["sojourn_ms_max"] > 0, queue

        def compare(metrics: str) -> dict:
            shown = json.loads(run_cli("compare", str(run_dir), "--metrics", metrics,
                                       "--format", "json", "--include-suspect").stdout)
            return shown["groups"][0]["metrics"]
        found = compare("drops,backlog_p95")      # metrics compare had before the engine's
        assert found["drops"]["mean"] > 0 and found["backlog_p95"]["mean"] > 0, found
        found = compare("marks,sojourn_p50")
        assert found["marks"]["mean"] == 0, found           # no ECN: CoDel drops
        assert 0 < found["sojourn_p50"]["mean"] < 0.2, found

        links = json.loads(run_cli("link", "show", "--link", "r1-r2", "--json",
                                   "--testbed", clean_instance).stdout)
        lane = next(e for e in links if e["direction"] == "r1->r2")["kernel"]["link_engine"]
        counters, bottleneck = lane["counters"], lane["counters"]["bottleneck"]
        queue_drops = bottleneck["tail_drops"] + bottleneck["aqm_drops"]
        assert counters["held"] == 0 and bottleneck["backlog_bytes"] == 0, counters
        assert counters["released"] == counters["packets"] - queue_drops - \
            counters["dropped"] - counters["reordered"], counters
    finally:
        down = run_cli("down", "--name", clean_instance, check=False)
        assert down.returncode == 0, down.stderr
