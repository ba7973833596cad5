"""testbed merge: gathering the runs of one sweep from many workers (synthetic run
directories carrying the manifest's matrix block, as testbed run records it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.analysis import load_runs
from testbed.analysis.merge import REPORT_FILE, load_listing, merge_runs
from testbed.analysis.runs import ResultsError
from testbed.analysis.synthetic import FakeFlow, write_run

HASH = "0123456789abcdef"
COUNT = 4


def point_id(index: int) -> str:
    return f"key{index // 2:09d}-r{index % 2}"


def sweep_run(base: Path, index: int, *, name: str | None = None, matrix_hash: str = HASH,
              status: str = "complete", started: float = 0.0, count: int = COUNT) -> Path:
    """One synthetic run of a 4-run sweep, with the manifest fields a worker records."""
    run = write_run(base, name or f"20261130T1200{index:02d}Z-{index:06x}", workload="sweep",
                    variables={"loss": f"{index // 2}%"}, repetition=index % 2, status=status,
                    flows=[FakeFlow("bulk", "cubic", 10e6 * (index + 1))])
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["matrix"] = {"hash": matrix_hash, "count": count, "index": index,
                          "point_id": point_id(index), "seed": 1000 + index}
    manifest["engine"] = {"engine": "kubernetes", "job_completion_index": str(index)}
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = json.loads((run / "result.json").read_text())
    result["started"] = started
    (run / "result.json").write_text(json.dumps(result))
    return run


def workers(tmp_path: Path, indexes=range(COUNT)) -> list[Path]:
    """Worker i's results directory holds the runs of the shard i (two workers)."""
    dirs = [tmp_path / "worker-1" / "sweep", tmp_path / "worker-2" / "sweep"]
    for i in indexes:
        sweep_run(dirs[i % 2], i)
    return [d.parent for d in dirs]


def test_complete_sweep_is_copied_into_one_tree(tmp_path):
    sources = workers(tmp_path)
    report = merge_runs(sources, tmp_path / "out")
    assert report.complete and report.ok and not report.missing and not report.duplicates
    merged = sorted(p.name for p in (tmp_path / "out" / "sweep").iterdir())
    assert merged == sorted(p.name for s in sources for p in (s / "sweep").iterdir())
    assert len(merged) == COUNT
    assert all((s / "sweep").is_dir() and len(list((s / "sweep").iterdir())) == 2 for s in sources)
    assert len(load_runs([tmp_path / "out"]).runs) == COUNT
    written = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert written["complete"] is True and written["matrices"] == {HASH: COUNT}
    assert report.lines()[-1] == "complete"


def test_a_missing_point_is_reported_and_makes_the_merge_not_ok(tmp_path):
    sources = workers(tmp_path, indexes=[0, 1, 2])
    report = merge_runs(sources, tmp_path / "out")
    assert not report.complete and not report.ok
    assert [(m.matrix_hash, m.index) for m in report.missing] == [(HASH, 3)]
    assert "missing: index 3 of matrix 0123456789abcdef: no run" in report.lines()
    assert len(report.copied) == 3           # what there is is still merged
    assert merge_runs(sources, tmp_path / "out2", allow_partial=True).ok


def test_a_point_whose_runs_all_failed_is_missing_with_its_runs(tmp_path):
    sources = workers(tmp_path, indexes=[0, 1, 2])
    failed = sweep_run(sources[1] / "sweep", 3, status="failed")
    report = merge_runs(sources, tmp_path / "out")
    assert [m.failed for m in report.missing] == [[failed]]
    assert (tmp_path / "out" / "sweep" / failed.name).is_dir()


def test_duplicates_keep_the_complete_run_and_report_the_rest(tmp_path):
    sources = workers(tmp_path, indexes=[0, 1, 2])
    retried_first = sweep_run(sources[0] / "sweep", 3, name="20261130T1300Z-aaaaaa", status="failed")
    retried = sweep_run(sources[1] / "sweep", 3, name="20261130T1301Z-bbbbbb", started=5.0)
    again = sweep_run(sources[1] / "sweep", 3, name="20261130T1302Z-cccccc", started=9.0)
    report = merge_runs(sources, tmp_path / "out")
    assert report.complete
    assert report.duplicates == {point_id(3): [again, retried_first]}
    assert any(line.startswith(f"duplicate: {point_id(3)}") for line in report.lines())
    merged = {p.name for p in (tmp_path / "out" / "sweep").iterdir()}
    assert retried.name in merged and again.name not in merged and retried_first.name not in merged
    assert len(merged) == COUNT


def test_runs_of_another_matrix_are_refused_and_nothing_is_created(tmp_path):
    sources = workers(tmp_path, indexes=[0, 1, 2])
    other = sweep_run(sources[1] / "sweep", 3, matrix_hash="fedcba9876543210")
    with pytest.raises(ResultsError, match="runs of different matrices") as exc:
        merge_runs(sources, tmp_path / "out")
    assert str(other) in str(exc.value) and "--allow-mixed" in str(exc.value)
    assert not (tmp_path / "out").exists()
    report = merge_runs(sources, tmp_path / "out", allow_mixed=True)
    assert report.matrices == {HASH: 3, "fedcba9876543210": 1}
    assert [m.index for m in report.missing] == [3, 0, 1, 2]     # each matrix is incomplete


def test_runs_recording_no_matrix_are_mixed_with_those_that_do(tmp_path):
    sources = workers(tmp_path, indexes=[0, 1])
    write_run(sources[0] / "sweep", "old-run", workload="sweep", variables={"loss": "0%"},
              flows=[FakeFlow("bulk", "cubic", 1e6)])
    with pytest.raises(ResultsError, match="none recorded: 1 run"):
        merge_runs(sources, tmp_path / "out")
    report = merge_runs(sources, tmp_path / "out", allow_mixed=True, allow_partial=True)
    assert report.without_point == [(sources[0] / "sweep" / "old-run").resolve()]


def test_merge_never_overwrites_and_is_idempotent(tmp_path):
    sources = workers(tmp_path)
    merge_runs(sources, tmp_path / "out")
    again = merge_runs(sources, tmp_path / "out")
    assert again.copied == [] and len(again.already) == COUNT and again.complete
    victim = next((tmp_path / "out" / "sweep").iterdir())
    (victim / "result.json").write_text((victim / "result.json").read_text().replace("cubic", "reno"))
    with pytest.raises(ResultsError, match="exists and is not .* never overwrites"):
        merge_runs(sources, tmp_path / "out")
    assert "reno" in (victim / "result.json").read_text()


def test_merging_into_the_tree_it_reads_adds_the_new_worker(tmp_path):
    first = workers(tmp_path, indexes=[0, 1])
    merge_runs(first, tmp_path / "out", allow_partial=True)
    late = tmp_path / "late"
    sweep_run(late / "sweep", 2)
    sweep_run(late / "sweep", 3)
    report = merge_runs([tmp_path / "out", late], tmp_path / "out")
    assert report.complete and len(report.copied) == 2 and len(report.already) == 2


def test_two_runs_that_would_land_on_one_name_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    sweep_run(a / "sweep", 0, name="same")
    sweep_run(b / "sweep", 1, name="same")
    with pytest.raises(ResultsError, match="would both be merged as"):
        merge_runs([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_listing_names_the_missing_runs_and_must_match(tmp_path):
    sources = workers(tmp_path, indexes=[0, 1, 2])
    listing = {"workload": "sweep", "matrix_hash": HASH, "count": COUNT,
               "points": [{"id": point_id(i), "index": i, "label": f"loss={i // 2}%,rep{i % 2}"}
                          for i in range(COUNT)]}
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps(listing))
    report = merge_runs(sources, tmp_path / "out", listing=load_listing(path))
    assert [m.describe() for m in report.missing] == \
        [f"{point_id(3)} (loss=1%,rep1) of matrix {HASH}: no run"]
    with pytest.raises(ResultsError, match="the listing is of matrix ffff"):
        merge_runs(sources, tmp_path / "out2", listing={**listing, "matrix_hash": "ffff"})
    path.write_text("[]")
    with pytest.raises(ResultsError, match="not a matrix listing"):
        load_listing(path)


def test_interrupted_runs_are_reported_not_merged(tmp_path):
    sources = workers(tmp_path)
    cut = sources[0] / "sweep" / "20261130T1400Z-dddddd"
    cut.mkdir()
    (cut / "manifest.json").write_text("{}")
    report = merge_runs(sources, tmp_path / "out")
    assert report.interrupted == [cut] and report.complete
    assert not (tmp_path / "out" / "sweep" / cut.name).exists()


def test_no_runs_at_all_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no runs found"):
        merge_runs([tmp_path / "empty"], tmp_path / "out")


def test_merge_reads_what_a_worker_records(tmp_path):
    """The contract between the two sides: manifests carrying run_record() of a real
    expansion; one run not done is missing by its id and label."""
    from testbed.workload.matrix import load_matrix
    from testbed.workload.sharding import run_record
    (tmp_path / "topo.yaml").write_text("name: t\n")
    (tmp_path / "wl.yaml").write_text("name: contract\ntopology: topo.yaml\nmatrix:\n  cc: [cubic, bbr]\n"
                                      "repeat: 2\nflows:\n  - {from: a, to: b, cc: '{{ cc }}'}\n")
    matrix = load_matrix(tmp_path / "wl.yaml")
    for point in matrix.points[:-1]:
        run = write_run(tmp_path / "w" / f"worker-{point.index % 2}", f"run-{point.index}",
                        workload="contract", variables=point.variables,
                        flows=[FakeFlow("f", point.variables["cc"], 1e6)])
        manifest = json.loads((run / "manifest.json").read_text())
        manifest.update(run_record(matrix, point, {}))
        (run / "manifest.json").write_text(json.dumps(manifest))
    report = merge_runs([tmp_path / "w"], tmp_path / "out", listing=matrix.listing())
    last = matrix.points[-1]
    assert [(m.index, m.point_id, m.label) for m in report.missing] == [(3, last.id, "cc=bbr,rep1")]
    assert report.matrices == {matrix.hash: 3}


def test_a_copy_cut_short_leaves_nothing_that_reads_as_a_run(tmp_path, monkeypatch):
    import shutil as shutil_module
    sources = workers(tmp_path, indexes=[0])[:1]

    def interrupted(src, dst, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(shutil_module, "copy2", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_runs(sources, tmp_path / "out", allow_partial=True)
    monkeypatch.undo()
    assert list((tmp_path / "out").rglob("result.json")) == []
    assert list((tmp_path / "out").rglob("manifest.json")) == []
    assert merge_runs(sources, tmp_path / "out", allow_partial=True).copied


def test_bad_output_and_listing_are_refused(tmp_path):
    sources = workers(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="-o .*file: exists and is not a directory"):
        merge_runs(sources, tmp_path / "file")
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({"matrix_hash": HASH, "points": [{"id": "x"}]}))
    with pytest.raises(ResultsError, match="not a matrix listing"):
        load_listing(path)
