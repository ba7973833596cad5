"""The sweep primitives on the command line: ``testbed matrix`` (and a worker's
share of it, listed without running), ``run``'s selector options reaching
``run_workload``, and ``compare --by`` with manifest fields. No root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cli.main import main

TOPO = "variables:\n  delay: 10ms\n  loss: 0%\n---\nname: t\n# delay {{ delay }} loss {{ loss }}\n"
# 6 x 6 x 5 points x 2 repetitions = 360 runs
BIG = """\
variables:
  delay: 10ms
---
name: big
topology: topo.yaml
matrix:
  cc: [cubic, bbr, reno, htcp, vegas, dctcp]
  loss: [0%, 0.1%, 0.5%, 1%, 2%, 5%]
  delay: [5ms, 10ms, 20ms, 40ms, 80ms]
repeat: 2
flows:
  - {from: h1, to: h3, cc: "{{ cc }}"}
"""


def big(tmp_path: Path) -> Path:
    (tmp_path / "topo.yaml").write_text(TOPO)
    (tmp_path / "wl.yaml").write_text(BIG)
    return tmp_path / "wl.yaml"


def cli_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_sharded_listings_are_the_sequential_listing_split_exactly(tmp_path, capsys, monkeypatch):
    path = str(big(tmp_path))
    whole = cli_json(capsys, "matrix", path, "--json")
    assert whole["count"] == 360 and len(whole["points"]) == 360 and len(whole["jobs"]) == 256
    seen: list[dict] = []
    for i in (1, 2):
        part = cli_json(capsys, "matrix", path, "--json", "--shard", f"{i}/3")
        assert part["matrix_hash"] == whole["matrix_hash"]
        seen += part["points"]
    # the third as a Kubernetes Indexed Job with 3 completions gives it out (index from 0)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    part = cli_json(capsys, "matrix", path, "--json", "--point-from-env", "--shards", "3")
    assert part["matrix_hash"] == whole["matrix_hash"]
    assert [p["index"] for p in part["points"]] == list(range(240, 360))   # the third block
    seen += part["points"]
    assert sorted(seen, key=lambda p: p["index"]) == whole["points"]     # ids, seeds, all
    assert len({p["id"] for p in seen}) == 360


def test_matrix_text_and_one_point(tmp_path, capsys):
    path = str(big(tmp_path))
    assert main(["matrix", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("big: 360 runs, matrix ") and len(lines) == 361
    some = lines[17].split()
    assert main(["matrix", path, "--point", some[1]]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [lines[17]]


def test_a_worker_with_another_expansion_is_refused(tmp_path, capsys):
    path = str(big(tmp_path))
    assert main(["matrix", path, "--expect-matrix", "0123456789abcdef"]) == 2
    assert "--expect-matrix 0123456789abcdef" in capsys.readouterr().err


def test_run_passes_the_selection_to_run_workload(tmp_path, monkeypatch):
    import testbed.run.workload
    seen = {}

    def fake(path, **kwargs):
        seen.update(kwargs)
        return []
    monkeypatch.setattr(testbed.run.workload, "run_workload", fake)
    assert main(["run", str(big(tmp_path)), "--shard", "2/7", "--expect-matrix", "abc",
                 "--quiet"]) == 0
    sel = seen["selection"]
    assert (sel.shard, sel.expect_matrix, sel.point_id, sel.index) == ("2/7", "abc", None, None)


@pytest.mark.parametrize("argv, message", [
    (["--point", "x", "--index", "1"], "--point and --index"),
    (["--shards", "3"], "--shards goes with --point-from-env"),
    (["--index", "360"], "this matrix has 360 runs"),
])
def test_bad_selections_exit_2(tmp_path, capsys, argv, message):
    assert main(["matrix", str(big(tmp_path)), *argv]) == 2
    assert message in capsys.readouterr().err
