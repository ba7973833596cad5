"""Studies as shipped: a workload's trend holds when it runs (root, real namespaces).

Short versions of the shipped workloads (fewer points, short flows); each
checks the direction of the effect the workload's header promises, with a
margin a slow or starved host cannot erase.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from testbed.analysis import load_runs, summarize
from testbed.analysis.verdicts import check_assertions
from testbed.run.workload import run_workload

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]


def test_buffer_sweep_bbr_share_falls_as_the_buffer_grows(tmp_path):
    out = tmp_path / "res"
    for queue in ("0.25bdp", "16bdp"):
        run_workload(REPO / "workloads" / "buffer-sweep.yaml", output=out, progress=False,
                     variables={"queue": queue, "duration": "8s"},
                     name="st" + secrets.token_hex(3))
    runs = load_runs([out], include_suspect=True)   # a busy host may mark them: the trend holds
    assert len(runs.runs) == 2, runs.exclusion_note()
    summary = summarize(runs)
    assert summary.flow_by == ["cc"]          # shared runs are split, not pooled
    shallow = summary.select({"cc": "bbr", "queue": "0.25bdp"}).estimate("share").mean
    deep = summary.select({"cc": "bbr", "queue": "16bdp"}).estimate("share").mean
    print(f"bbr share: {shallow:.2f} at 0.25 BDP, {deep:.2f} at 16 BDP")
    (verdict,) = check_assertions(summary, ["share[cc=bbr,queue=0.25bdp] > "
                                            "share[cc=bbr,queue=16bdp] + 10%"])
    assert verdict.passed, verdict.message


LESSONS = REPO / "workloads" / "lessons"
# shorter than as shipped where the phenomenon fits in less time
SHORT = {"sawtooth": {"duration": "6s"}, "udp-vs-tcp": {"duration": "4s"},
         "bbr-vs-cubic": {"duration": "4s"}, "slow-start": {"duration": "2s"}}


def header_assertions(path: Path) -> list[str]:
    """The ``--assert "..."`` of a workload's header: what it promises to show."""
    header = "".join(line for line in path.read_text().splitlines(keepends=True)
                     if line.startswith("#"))
    return re.findall(r'--assert "([^"]+)"', header)


@pytest.mark.parametrize("lesson", sorted(p.stem for p in LESSONS.glob("*.yaml")))
def test_a_lesson_shows_what_its_header_says(tmp_path, lesson):
    path = LESSONS / f"{lesson}.yaml"
    assertions = header_assertions(path)
    assert assertions, f"{path.name} promises nothing it checks"
    out = tmp_path / "res"
    run_workload(path, output=out, progress=False, variables=SHORT.get(lesson, {}),
                 name="st" + secrets.token_hex(3))
    summary = summarize(load_runs([out], include_suspect=True))
    verdicts = check_assertions(summary, assertions)
    for v in verdicts:
        print(f"{lesson}: {'PASS' if v.passed else 'FAIL'} {v.text} ({v.message})")
    assert all(v.passed for v in verdicts), [v.message for v in verdicts if not v.passed]
