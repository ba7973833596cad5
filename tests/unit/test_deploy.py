"""deploy/: the Kubernetes manifests and the CI workflow validate offline against
their schemas and agree with what testbed computes; the container's entrypoint
runs doctor before a run and reports merge, report and assert failures."""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from testbed.workload.matrix import load_matrix

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
WORKFLOW = REPO / ".github" / "workflows" / "sweep.yml"
KUBE_VERSIONS = ("1.29.0", "1.37.0")    # 1.29: the oldest schema with every field used


def kube_documents() -> list[tuple[str, dict]]:
    return [(p.name, doc) for p in sorted(KUBE.glob("*.yaml")) if p.name != "kustomization.yaml"
            for doc in yaml.safe_load_all(p.read_text())]


def by_name(name: str) -> dict:
    return next(doc for _, doc in kube_documents() if doc["metadata"]["name"] == name)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_validate_strictly(version):
    kv = pytest.importorskip("kubernetes_validate")
    docs = kube_documents()
    assert {d["kind"] for _, d in docs} == {"Job", "PersistentVolumeClaim"}
    for name, doc in docs:
        kv.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misspelt_field():
    kv = pytest.importorskip("kubernetes_validate")
    job = copy.deepcopy(by_name("testbed-sweep"))
    job["spec"]["template"]["spec"]["hostNetwrok"] = False
    with pytest.raises(kv.ValidationError):
        kv.validate(job, KUBE_VERSIONS[-1], strict=True)


def test_kustomization_lists_existing_files():
    kust = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    assert all((KUBE / r).is_file() for r in kust["resources"])


def worker_args(job: dict) -> list[str]:
    return job["spec"]["template"]["spec"]["containers"][0]["args"]


def test_sweep_job_has_one_completion_per_run_of_its_workload():
    job = by_name("testbed-sweep")
    args = worker_args(job)
    assert args[0] == "run" and "--point-from-env" in args
    repeat = int(args[args.index("--repeat") + 1])
    matrix = load_matrix(REPO / args[1], repeat=repeat)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == len(matrix.points)


def test_sweep_pods_keep_one_per_node_in_their_own_network_namespace():
    pod = by_name("testbed-sweep")["spec"]["template"]
    spec = pod["spec"]
    assert spec["hostNetwork"] is False and spec["restartPolicy"] == "Never"
    term = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["nodeSelector"]
    worker = spec["containers"][0]
    assert worker["securityContext"]["privileged"] is True
    assert "cpu" not in worker["resources"].get("limits", {})      # no CFS throttling
    env = {e["name"] for e in worker["env"]}
    assert {"JOB_NAME", "POD_NAME", "NODE_NAME", "TESTBED_RESULTS"} <= env


def test_merge_job_shares_the_results_volume_and_needs_no_privilege():
    claim = by_name("testbed-results")["metadata"]["name"]
    for name in ("testbed-sweep", "testbed-merge"):
        volumes = by_name(name)["spec"]["template"]["spec"]["volumes"]
        assert claim in [v.get("persistentVolumeClaim", {}).get("claimName") for v in volumes]
    merge = by_name("testbed-merge")["spec"]["template"]["spec"]["containers"][0]
    assert merge["args"][0] == "merge-report"
    assert merge["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert merge["securityContext"]["allowPrivilegeEscalation"] is False


def test_workflow_validates_against_the_github_schema():
    tool = shutil.which("check-jsonschema") or _beside_python("check-jsonschema")
    if tool is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[test]')")
    out = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _beside_python(name: str) -> str | None:
    import sys
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def test_workflow_is_reusable_and_runs_list_run_merge():
    flow = yaml.safe_load(WORKFLOW.read_text())
    assert "workflow_call" in flow[True]          # YAML 1.1 reads the key 'on' as True
    jobs = flow["jobs"]
    assert list(jobs) == ["list", "run", "merge"]
    assert jobs["run"]["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.list.outputs.jobs) }}"
    assert jobs["merge"]["needs"] == ["list", "run"]
    scripts = "\n".join(s.get("run", "") for j in jobs.values() for s in j["steps"])
    assert "${{" not in scripts, "inputs reach scripts through env, not pasted in"


def test_containerfile_installs_what_setup_installs():
    text = (REPO / "deploy" / "Containerfile").read_text()
    setup = re.search(r"^packages=\((.*)\)", (REPO / "setup").read_text(), re.M).group(1).split()
    installed = re.search(r"apt-get install -y --no-install-recommends (.*?)&&", text, re.S).group(1)
    assert set(setup) <= set(installed.replace("\\", " ").split())
    for src in re.findall(r"^COPY (\S+)", text, re.M):
        assert (REPO / src).exists(), src
    assert 'ENTRYPOINT ["testbed-entrypoint"]' in text and "/usr/local/bin/testbed-entrypoint" in text


# ---- the entrypoint, with a testbed that records what it was asked ----------------------

FAKE = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
  doctor) exit "${FAKE_DOCTOR:-0}" ;;
  merge) exit "${FAKE_MERGE:-0}" ;;
  compare) exit "${FAKE_COMPARE:-0}" ;;
esac
exit 0
"""


@pytest.fixture
def fake(tmp_path):
    tool = tmp_path / "testbed"
    tool.write_text(FAKE)
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "calls.log"

    def run(*args: str, **env: str) -> tuple[int, list[str]]:
        environ = {"PATH": os.environ["PATH"], "TESTBED_BIN": str(tool), "FAKE_LOG": str(log),
                   "TESTBED_RESULTS": "/results/workers", **env}
        p = subprocess.run(["sh", str(ENTRYPOINT), *args], env=environ, capture_output=True,
                           text=True)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return p.returncode, calls
    return run


def test_a_worker_runs_doctor_then_its_run_into_its_own_directory(fake):
    rc, calls = fake("run", "workloads/loss-sweep.yaml", "--point-from-env",
                     POD_NAME="testbed-sweep-7-x2k9q", JOB_COMPLETION_INDEX="7")
    assert rc == 0
    assert calls == ["doctor", "run workloads/loss-sweep.yaml --point-from-env "
                     "--output /results/workers/testbed-sweep-7-x2k9q-7"]


def test_a_node_that_fails_doctor_runs_nothing(fake):
    rc, calls = fake("run", "workloads/loss-sweep.yaml", FAKE_DOCTOR="3", HOSTNAME="n1")
    assert rc == 3 and calls == ["doctor"]


def test_merge_report_does_all_three_and_exits_with_the_first_failure(fake):
    rc, calls = fake("merge-report", "/results/workers", "/results/merged", FAKE_MERGE="1",
                     TESTBED_ASSERT="goodput > 1mbit", TESTBED_MATRIX_LISTING="matrix.json")
    assert rc == 1
    assert calls == ["merge /results/workers -o /results/merged --matrix matrix.json",
                     "report /results/merged -o /results/merged/report.html",
                     "compare /results/merged --assert goodput > 1mbit "
                     "--junit /results/merged/junit.xml"]
    rc, calls = fake("merge-report", "w", "m", FAKE_COMPARE="1", TESTBED_ALLOW_PARTIAL="1",
                     TESTBED_ASSERT="x")
    assert rc == 1 and calls[0] == "merge w -o m --allow-partial"
    rc, calls = fake("merge-report", "w", "m")
    assert rc == 0 and [c.split()[0] for c in calls] == ["merge", "report"]


def test_entrypoint_passes_other_commands_to_testbed(fake):
    assert fake("matrix", "wl.yaml", "--json") == (0, ["matrix wl.yaml --json"])
    assert fake("merge-report", "only-one")[0] == 2
