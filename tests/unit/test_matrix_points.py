"""Points as first-class things: stable ids, the matrix hash, derived seeds,
and how a worker picks its share (--point, --index, --shard, JOB_COMPLETION_INDEX)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.workload import load_source
from testbed.workload.matrix import canonical_json, expand_points, load_matrix, point_key
from testbed.workload.sharding import (engine_identity, job_matrix, parse_shard, point_from_env,
                                       select_points)

REPO = Path(__file__).resolve().parents[2]
TOPO = "variables:\n  delay: 10ms\n  loss: 0%\n---\nname: t\n# delay {{ delay }} loss {{ loss }}\n"
BODY = """\
variables:
  rate: 100mbit
  delay: 10ms
---
name: sweep
topology: topo.yaml
matrix:
  cc: [cubic, bbr]
  loss: [0%, 1%, 5%]
repeat: 2
flows:
  - {from: h1, to: h3, cc: "{{ cc }}"}
"""


def workload(tmp_path: Path, body: str = BODY, topo: str = TOPO) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "topo.yaml").write_text(topo)
    (tmp_path / "wl.yaml").write_text(body)
    return tmp_path / "wl.yaml"


LISTING = "import json, sys; from testbed.workload.matrix import matrix_listing; " \
          "print(json.dumps(matrix_listing(sys.argv[1])))"


def listing_in_subprocess(path: Path, cwd: Path, hash_seed: str, extra_env: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, **extra_env,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", LISTING, str(path)], cwd=cwd, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_ids_and_hash_are_the_same_in_other_processes_dirs_and_hash_seeds(tmp_path):
    a = workload(tmp_path / "machine-a" / "checkout")
    b = workload(tmp_path / "elsewhere")
    one = listing_in_subprocess(a, tmp_path, "1", {"HOSTNAME": "node-1", "TZ": "UTC"})
    two = listing_in_subprocess(b, b.parent, "4242", {"HOSTNAME": "node-2", "TZ": "Asia/Tokyo"})
    assert one["count"] == 12
    assert [p["id"] for p in one["points"]] == [p["id"] for p in two["points"]]
    assert [p["seed"] for p in one["points"]] == [p["seed"] for p in two["points"]]
    assert one["matrix_hash"] == two["matrix_hash"]
    here = load_matrix(a)
    assert here.hash == one["matrix_hash"] and [p.id for p in here.points] == \
        [p["id"] for p in one["points"]]


def test_ids_are_unique_and_repetitions_share_the_key(tmp_path):
    points = expand_points(load_source(workload(tmp_path)))
    assert len({p.id for p in points}) == 12
    second = next(p for p in points if p.key == points[0].key and p is not points[0])
    assert second.id != points[0].id and second.id == f"{second.key}-r1"
    assert len({p.seed for p in points}) == 12


def test_key_is_the_hash_of_name_and_variables_not_their_order():
    assert point_key("w", {"a": 1, "b": "x"}) == point_key("w", {"b": "x", "a": 1})
    assert point_key("w", {"a": 1}) != point_key("w", {"a": "1"})
    assert point_key("w", {"a": 1}) != point_key("v", {"a": 1})
    assert canonical_json({"b": [1, 2.5], "a": "ü"}) == '{"a":"ü","b":[1,2.5]}'


def test_a_points_id_and_seed_survive_a_new_matrix_value(tmp_path):
    # seeds used to be workload seed + run index: one more loss value shifted every later seed
    before = {p.label: (p.id, p.seed) for p in expand_points(load_source(workload(tmp_path / "a")))}
    more = BODY.replace("[0%, 1%, 5%]", "[0%, 0.5%, 1%, 5%]")
    after = {p.label: (p.id, p.seed) for p in expand_points(load_source(workload(tmp_path / "b", more)))}
    assert len(after) == 16
    assert all(after[label] == before[label] for label in before)


def test_seed_follows_the_workload_seed(tmp_path):
    base = [p.seed for p in expand_points(load_source(workload(tmp_path / "a")))]
    other = BODY.replace("repeat: 2", "repeat: 2\nseed: 7")
    seeded = [p.seed for p in expand_points(load_source(workload(tmp_path / "b", other)))]
    assert base != seeded and all(0 <= s < 2 ** 31 for s in base + seeded)


def test_matrix_hash_covers_the_rendered_topology_and_the_expansion(tmp_path):
    base = load_matrix(workload(tmp_path / "a")).hash
    assert load_matrix(workload(tmp_path / "b")).hash == base
    assert load_matrix(workload(tmp_path / "c", topo=TOPO + "# edited\n")).hash != base
    assert load_matrix(workload(tmp_path / "a"), repeat=3).hash != base
    assert load_matrix(workload(tmp_path / "a"), {"rate": "50mbit"}).hash != base
    # a value that only the topology renders changes the hash, not the ids
    pinned = load_matrix(workload(tmp_path / "a"), {"delay": "20ms"})
    assert pinned.hash != base


def test_listing_of_a_shipped_workload():
    listing = load_matrix(REPO / "workloads" / "loss-sweep.yaml", repeat=10).listing()
    assert listing["workload"] == "loss-sweep" and listing["count"] == 120
    assert listing["points"][0]["label"] == "cc=cubic,loss=0%,rep0"


@pytest.mark.parametrize("count", [1, 7, 12, 360])
def test_shards_partition_the_runs_exactly(count):
    points = [p for p in _many(count)]
    for n in range(1, min(count, 40) + 1):
        shards = [select_points(points, shard_spec=f"{i}/{n}") for i in range(1, n + 1)]
        flat = [p.index for s in shards for p in s]
        assert sorted(flat) == list(range(count))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _many(count: int):
    from testbed.workload.matrix import RunPoint
    return [RunPoint(variables={"i": i}, point={"i": i}, repetition=0, index=i, workload="w")
            for i in range(count)]


def test_repetitions_of_a_point_go_to_different_shards(tmp_path):
    points = expand_points(load_source(workload(tmp_path)))
    first, second = select_points(points, shard_spec="1/2"), select_points(points, shard_spec="2/2")
    assert {p.repetition for p in first} == {0} and {p.repetition for p in second} == {1}
    assert [p.key for p in first] == [p.key for p in second]


@pytest.mark.parametrize("spec, message", [("3", "expected I/N"), ("0/3", "1 <= I <= N"),
                                           ("4/3", "1 <= I <= N"), ("1/0", "1 <= I <= N"),
                                           ("1/13", "more shards than")])
def test_bad_shard(tmp_path, spec, message):
    points = expand_points(load_source(workload(tmp_path)))
    with pytest.raises(ConfigError, match=message):
        select_points(points, shard_spec=spec)


def test_select_by_id_key_and_index(tmp_path):
    points = expand_points(load_source(workload(tmp_path)))
    assert select_points(points, point_id=points[3].id) == [points[3]]
    assert select_points(points, point_id=points[3].key) == [p for p in points if p.key == points[3].key]
    assert select_points(points, index=11) == [points[11]]
    assert select_points(points) == points
    with pytest.raises(ConfigError, match="--point nope: no run"):
        select_points(points, point_id="nope")
    with pytest.raises(ConfigError, match=r"--index 12: this matrix has 12 runs"):
        select_points(points, index=12)
    with pytest.raises(ConfigError, match="--point and --index: give one"):
        select_points(points, point_id=points[0].id, index=0)


def test_job_completion_index_maps_to_the_run_at_that_index(tmp_path):
    points = expand_points(load_source(workload(tmp_path)))
    picked = [select_points(points, index=point_from_env({"JOB_COMPLETION_INDEX": str(i)}))[0]
              for i in range(len(points))]
    assert picked == points
    assert point_from_env({"SHARD": "3"}, "SHARD") == 3
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX is not set"):
        point_from_env({})
    with pytest.raises(ConfigError, match="not a run index"):
        point_from_env({"JOB_COMPLETION_INDEX": "-1"})


def test_job_matrix_one_job_per_run_then_shards(tmp_path):
    matrix = load_matrix(workload(tmp_path))
    jobs = job_matrix(matrix)
    assert [j["select"] for j in jobs] == [f"--point {p.id}" for p in matrix.points]
    sharded = job_matrix(matrix, max_jobs=5)
    assert [j["select"] for j in sharded] == [f"--shard {i}/5" for i in range(1, 6)]
    covered = [p for j in sharded for p in select_points(matrix.points, shard_spec=j["select"].split()[1])]
    assert sorted(p.index for p in covered) == list(range(12))


def test_engine_identity_from_the_environment():
    assert engine_identity({"HOME": "/root"}) == {"engine": None}
    k8s = engine_identity({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "JOB_COMPLETION_INDEX": "4",
                           "JOB_NAME": "sweep-1", "HOSTNAME": "sweep-1-4-x7k2p", "NODE_NAME": "n3"})
    assert k8s == {"engine": "kubernetes", "job_name": "sweep-1", "job_completion_index": "4",
                   "hostname": "sweep-1-4-x7k2p", "node_name": "n3"}
    gha = engine_identity({"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "99", "GITHUB_JOB": "run",
                           "TESTBED_JOB_MATRIX": '{"select": "--shard 1/2"}', "HOSTNAME": "x"})
    assert gha == {"engine": "github-actions", "github_run_id": "99", "github_job": "run",
                   "testbed_job_matrix": '{"select": "--shard 1/2"}'}


def test_parse_shard_accepts_spaces():
    assert parse_shard(" 2 / 5 ") == (2, 5)


def test_a_worker_refuses_an_expansion_other_than_the_listed_one(tmp_path):
    from testbed.workload.sharding import check_matrix_hash, sweep_listing
    path = workload(tmp_path)
    listed = sweep_listing(load_matrix(path), max_jobs=3)
    assert listed["count"] == 12 and len(listed["jobs"]) == 3
    check_matrix_hash(load_matrix(path), listed["matrix_hash"])
    with pytest.raises(ConfigError, match="--expect-matrix .* differ from those the sweep"):
        check_matrix_hash(load_matrix(path, repeat=1), listed["matrix_hash"])


def test_an_engine_index_can_name_a_shard_instead_of_a_run(tmp_path):
    from testbed.workload.sharding import selection_from_env
    points = expand_points(load_source(workload(tmp_path)))
    assert selection_from_env({"JOB_COMPLETION_INDEX": "5"}) == {"index": 5}
    picked = [p for k in range(4) for p in select_points(
        points, **selection_from_env({"JOB_COMPLETION_INDEX": str(k)}, shards=4))]
    assert sorted(p.index for p in picked) == list(range(12))
    with pytest.raises(ConfigError, match="--shards 4: JOB_COMPLETION_INDEX=4 is not a shard"):
        selection_from_env({"JOB_COMPLETION_INDEX": "4"}, shards=4)


def test_ids_do_not_change_between_testbed_versions():
    # Pinned on purpose: a sweep's workers may run different testbed builds (an image here,
    # a checkout there), so the id and seed scheme is a format. These are the values
    # docs/scale-out.md shows; changing the scheme means changing both, knowingly.
    variables = {"rate": "100mbit", "delay": "50ms", "queue": "1bdp", "duration": "10s",
                 "cc": "cubic", "loss": "0%"}
    assert point_key("loss-sweep", variables) == "82bd63863565"
    first = expand_points(load_source(REPO / "workloads" / "loss-sweep.yaml"), repeat=10)[0]
    assert (first.id, first.seed) == ("82bd63863565-r0", 1132320596)
    doc = (REPO / "docs" / "scale-out.md").read_text()
    assert '"id": "82bd63863565-r0"' in doc and '"seed": 1132320596' in doc


def test_worker_points_applies_the_cli_options(tmp_path):
    from testbed.workload.sharding import Selection, worker_points
    matrix = load_matrix(workload(tmp_path))
    env = {"JOB_COMPLETION_INDEX": "2"}
    assert worker_points(matrix, Selection(), env) == list(matrix.points)
    assert worker_points(matrix, Selection(from_env="JOB_COMPLETION_INDEX"), env) == [matrix.points[2]]
    n = len(matrix.points)
    assert worker_points(matrix, Selection(from_env="JOB_COMPLETION_INDEX", shards=3), env) == \
        list(matrix.points[2 * n // 3:])
    assert worker_points(matrix, Selection(shard="1/6", expect_matrix=matrix.hash), env) == \
        list(matrix.points[:n // 6])
    with pytest.raises(ConfigError, match="--point-from-env and --index: give one"):
        worker_points(matrix, Selection(from_env="X", index=1), env)
    with pytest.raises(ConfigError, match="--shards goes with --point-from-env"):
        worker_points(matrix, Selection(shards=3), env)
    with pytest.raises(ConfigError, match="--expect-matrix"):
        worker_points(matrix, Selection(expect_matrix="0" * 16), env)


def test_run_record_names_the_sweep_the_point_and_the_job(tmp_path):
    from testbed.workload.sharding import run_record
    matrix = load_matrix(workload(tmp_path))
    point = matrix.points[5]
    record = run_record(matrix, point, {"GITHUB_ACTIONS": "true", "GITHUB_RUN_ID": "7"})
    assert record["matrix"] == {"hash": matrix.hash, "count": 12, "index": 5, "point_id": point.id,
                                "point_key": point.key, "seed": point.seed}
    assert record["engine"] == {"engine": "github-actions", "github_run_id": "7"}


def test_matrix_lines_for_people(tmp_path):
    matrix = load_matrix(workload(tmp_path))
    lines = matrix.lines()
    assert lines[0] == f"sweep: 12 runs, matrix {matrix.hash}"
    p = matrix.points[11]
    assert lines[12].split() == ["11", p.id, "seed", str(p.seed), "cc=bbr,loss=5%,rep1"]


def test_repetitions_are_interleaved(tmp_path):
    """Every point's first repetition before any second one: a host that drifts over a long
    sweep (warming up, a neighbour starting) then touches every point alike."""
    points = expand_points(load_source(workload(tmp_path)))
    reps = [p.repetition for p in points]
    assert reps == sorted(reps) and len(set(reps)) > 1
    assert [p.index for p in points] == list(range(len(points)))
