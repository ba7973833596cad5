"""A sweep's shards as parallel local workers, then merged (root).

Each worker is its own ``testbed run`` process with its own instance name and
``JOB_COMPLETION_INDEX`` set as a Kubernetes Indexed Job sets it. Merging the
shards gives the same runs (ids, seeds) as one sequential run of the workload;
a shard killed with SIGKILL shows up as missing runs; a run merged twice as a
duplicate. Tiny runs: 4 points x 1 repetition, a 1 s flow on 3 nodes."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tb_helpers import leftovers, run_cli, wait_for

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

TOPO = """\
variables:
  delay: 1ms
---
name: sweep3
nodes:
  h1: {kind: host}
  r1: {kind: router}
  h2: {kind: host}
links:
  - {endpoints: [h1, r1], delay: "{{ delay }}"}
  - {endpoints: [r1, h2]}
"""
WORKLOAD = """\
variables:
  delay: 1ms
---
name: it-sweep
topology: topo.yaml
matrix:
  delay: [1ms, 2ms, 3ms, 4ms]
duration: 1s
capture: {enabled: false}
flows:
  - {name: f, from: h1, to: h2, cc: cubic}
"""


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, dict]:
    (tmp_path / "topo.yaml").write_text(TOPO)
    (tmp_path / "wl.yaml").write_text(WORKLOAD)
    listing = run_cli("matrix", str(tmp_path / "wl.yaml"), "--json").stdout
    (tmp_path / "listing.json").write_text(listing)
    return tmp_path / "wl.yaml", json.loads(listing)


def worker(wl: Path, out: Path, name: str, index: int, shards: int, matrix_hash: str
           ) -> subprocess.Popen:
    env = {**os.environ, "JOB_COMPLETION_INDEX": str(index)}
    return subprocess.Popen([sys.executable, "-m", "testbed", "run", str(wl), "--quiet",
                             "--name", name, "--output", str(out), "--point-from-env",
                             "--shards", str(shards), "--expect-matrix", matrix_hash],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def recorded(root: Path) -> list[tuple[str, int, int]]:
    """(point id, index, seed) of every run under ``root``, from its manifest."""
    out = []
    for m in sorted(root.rglob("manifest.json")):
        block = json.loads(m.read_text())["matrix"]
        out.append((block["point_id"], block["index"], block["seed"]))
    return sorted(out, key=lambda r: r[1])


def test_parallel_shards_merge_into_the_sequential_run(sweep, tmp_path):
    wl, listing = sweep
    names = [f"rs{secrets.token_hex(2)}{i}" for i in range(3)]
    seq = run_cli("run", str(wl), "--quiet", "--name", names[0],
                  "--output", str(tmp_path / "seq"), timeout=180)
    assert len(seq.stdout.split()) == 4
    procs = [worker(wl, tmp_path / f"shard{i}", names[i + 1], i, 2, listing["matrix_hash"])
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        assert len(out.split()) == 2
    merged = run_cli("merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"),
                     "-o", str(tmp_path / "merged"), "--matrix", str(tmp_path / "listing.json"))
    assert merged.stdout.splitlines()[-1] == "complete"
    expected = [(p["id"], p["index"], p["seed"]) for p in listing["points"]]
    assert recorded(tmp_path / "merged") == recorded(tmp_path / "seq") == expected
    engines = [json.loads(m.read_text())["engine"] for m in (tmp_path / "merged").rglob("manifest.json")]
    assert sorted(e["job_completion_index"] for e in engines) == ["0", "0", "1", "1"]
    assert all(e["engine"] == "kubernetes" for e in engines)
    # a run merged twice: each of shard 0's points is there again, and said to be
    twice = run_cli("merge", str(tmp_path / "seq"), str(tmp_path / "shard0"),
                    "-o", str(tmp_path / "twice"), "--matrix", str(tmp_path / "listing.json"))
    dup = [line for line in twice.stdout.splitlines() if line.startswith("duplicate: ")]
    assert sorted(line.split()[1].rstrip(":") for line in dup) == \
        sorted(pid for pid, index, _ in expected if index < len(expected) // 2)   # shard 0
    for name in names:
        assert leftovers(name) == []


def test_a_killed_shard_shows_up_as_missing_runs(sweep, tmp_path):
    wl, listing = sweep
    done_name, killed_name = f"rs{secrets.token_hex(3)}", f"rs{secrets.token_hex(3)}"
    ok = worker(wl, tmp_path / "shard0", done_name, 0, 2, listing["matrix_hash"])
    killed = worker(wl, tmp_path / "shard1", killed_name, 1, 2, listing["matrix_hash"])
    try:
        wait_for(lambda: any((tmp_path / "shard1").rglob("processes.json")), timeout=60,
                 what="the second shard's first run to start its servers")
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        assert ok.wait(timeout=180) == 0
    finally:
        for p in (ok, killed):
            if p.poll() is None:
                p.kill()
        run_cli("down", "--name", killed_name, check=False)
    merged = run_cli("merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"),
                     "-o", str(tmp_path / "merged"), "--matrix", str(tmp_path / "listing.json"),
                     check=False)
    assert merged.returncode == 1, merged.stdout + merged.stderr
    lines = merged.stdout.splitlines()
    missing = [line for line in lines if line.startswith("missing: ")]
    count = len(listing["points"])   # shard 1 of 2: the second half of the runs
    second = [p["id"] for p in listing["points"] if p["index"] >= count // 2]
    assert len(missing) == 2 and all(any(pid in line for line in missing) for pid in second)
    assert any(line.startswith("interrupted") for line in lines)
    assert lines[-1].startswith("incomplete: 2 run(s) missing")
    assert leftovers(done_name) == [] and leftovers(killed_name) == []
