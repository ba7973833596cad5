"""compare --by kernel (or any manifest field): runs of a sweep over several
node pools grouped and selected by what they ran on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.analysis import load_runs, summarize
from testbed.analysis.fields import manifest_value, with_manifest_fields
from testbed.analysis.synthetic import FakeFlow, write_run
from testbed.analysis.verdicts import check_assertions
from testbed.errors import ConfigError


def pool_runs(base: Path) -> Path:
    """Two kernels x two reps of one point; the newer kernel gets twice the goodput."""
    for kernel, goodput in (("6.1.0", 40e6), ("6.8.0", 80e6)):
        for rep in range(2):
            run = write_run(base, f"{kernel}-{rep}", workload="pools", variables={"cc": "bbr"},
                            repetition=rep, flows=[FakeFlow("bulk", "bbr", goodput + rep * 1e6)])
            manifest = json.loads((run / "manifest.json").read_text())
            manifest["kernel"]["release"] = kernel
            manifest["engine"] = {"engine": "kubernetes", "node_name": f"node-{kernel}-{rep}"}
            (run / "manifest.json").write_text(json.dumps(manifest))
    return base


def test_runs_group_by_kernel_and_assertions_select_it(tmp_path):
    runset = load_runs([pool_runs(tmp_path)])
    plain = summarize(runset, [])
    assert len(plain.rows) == 1                      # without --by kernel: one group of 4
    summary = summarize(with_manifest_fields(runset, ["kernel"]), ["kernel"])
    assert [r.labels for r in summary.rows] == [{"kernel": "6.1.0"}, {"kernel": "6.8.0"}]
    verdict, = check_assertions(summary, ["goodput[kernel=6.8.0] > 1.9 * goodput[kernel=6.1.0]"])
    assert verdict.passed


def test_aliases_dotted_paths_and_fallbacks():
    manifest = {"kernel": {"release": "6.1"}, "host": {"hostname": "pod-1"},
                "tools": {"iperf3": "iperf 3.12"}}
    assert manifest_value(manifest, "kernel") == "6.1"
    assert manifest_value(manifest, "tools.iperf3") == "iperf 3.12"
    assert manifest_value(manifest, "node") == "pod-1"          # no engine block: the host
    assert manifest_value({**manifest, "engine": {"node_name": "n3"}}, "node") == "n3"
    assert manifest_value(manifest, "kernel.nope") is None
    assert manifest_value(manifest, "tools") is None             # not a scalar


def test_variables_and_flow_attributes_keep_their_meaning(tmp_path):
    runset = load_runs([pool_runs(tmp_path)])
    assert with_manifest_fields(runset, ["cc"]) is runset
    assert with_manifest_fields(runset, []).runs[0].variables == runset.runs[0].variables


def test_a_field_no_manifest_records_is_an_error(tmp_path):
    runset = load_runs([pool_runs(tmp_path)])
    with pytest.raises(ConfigError, match=r"--by job: no run's manifest.json records "
                                          r"engine.job_name or engine.github_job"):
        with_manifest_fields(runset, ["job"])


def test_compare_on_the_command_line_groups_by_a_manifest_field(tmp_path, capsys):
    from testbed.cli.main import main
    base = pool_runs(tmp_path / "runs")
    assert main(["compare", str(base), "--by", "kernel", "--format", "json",
                 "--assert", "goodput[kernel=6.8.0] > 1.9 * goodput[kernel=6.1.0]"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(json.dumps(out).count(k) > 0 for k in ("6.1.0", "6.8.0")) == [True, True]
    assert main(["report", str(base), "--by", "node", "-o", str(tmp_path / "r.html")]) == 0
    assert "node-6.8.0-1" in (tmp_path / "r.html").read_text()
