"""``testbed run`` preflight: input errors of a workload are found before anything is
made (no topology up, no run directory), as one error with file, YAML path and line.
No root: the topology is only loaded and planned."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import testbed.run.runner
from testbed.errors import ConfigError, PreflightError, TestbedError
from testbed.run.workload import run_workload

REPO = Path(__file__).resolve().parents[2]

WORKLOAD = """\
variables:
  rate: 10mbit
---
name: lc-pre
topology: {topo}
duration: 2s
flows:
  - {{name: ok, from: h1, to: h3}}
  - name: lost
    from: h2
    to: h9
  - {{name: odd, from: h2, to: h4, cc: vegas}}
"""


@pytest.fixture
def no_up(monkeypatch):
    """Fail loudly if anything tries to bring a topology up."""
    def refuse(*args, **kwargs):
        raise AssertionError("the topology was brought up")
    monkeypatch.setattr(testbed.run.runner, "up", refuse)


def write(tmp_path: Path, text: str = WORKLOAD) -> Path:
    path = tmp_path / "wl.yaml"
    path.write_text(text.format(topo=REPO / "topologies" / "dumbbell.yaml"))
    return path


def test_unknown_node_and_cc_are_one_input_error_before_anything_exists(tmp_path, no_up):
    with pytest.raises(ConfigError) as exc:
        run_workload(write(tmp_path), output=tmp_path / "res", name="lcpre", progress=False)
    err = exc.value
    assert err.exit_code == 2
    assert err.file == str(tmp_path / "wl.yaml")
    assert err.path == "flows[1].to" and err.line == 11 and "'h9'" in err.message
    assert "h1, h2, h3, h4, r1, r2" in err.message
    assert "flows[2].cc (line 12)" in err.message and "vegas" in err.message
    assert not (tmp_path / "res").exists()


def test_iperf3_with_size_and_count_is_refused_in_preflight(tmp_path, no_up):
    text = WORKLOAD.replace("    to: h9\n", "    to: h4\n    driver: iperf3\n    size: 1MB\n    count: 2\n") \
        .replace(", cc: vegas", "")
    with pytest.raises(ConfigError) as exc:
        run_workload(write(tmp_path, text), output=tmp_path / "res", name="lcpre", progress=False)
    assert exc.value.path == "flows[1].driver" and exc.value.line == 12
    assert "driver: builtin" in exc.value.message
    assert not (tmp_path / "res").exists()


def test_attaching_to_a_testbed_that_is_not_up_leaves_no_run_directory(tmp_path):
    with pytest.raises(TestbedError, match="no testbed named 'lcnothere'"):
        run_workload(write(tmp_path), output=tmp_path / "res", testbed_name="lcnothere",
                     progress=False)
    assert not (tmp_path / "res").exists()


def test_cli_exits_2_with_file_line_and_path(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "testbed", "run", str(write(tmp_path)), "--name",
                        "lcpre", "--output", str(tmp_path / "res"), "--quiet"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert f"{tmp_path / 'wl.yaml'}:11: flows[1].to: unknown node 'h9'" in p.stderr
    assert not (tmp_path / "res").exists()


def test_capture_interfaces_are_checked_against_the_topology(tmp_path, no_up):
    text = WORKLOAD.replace("    to: h9\n", "    to: h4\n").replace(", cc: vegas", "") + \
        "capture: {{enabled: true, interfaces: [bottleneck, 'r1:eth9', h1-h4, r2]}}\n"
    with pytest.raises(ConfigError) as exc:
        run_workload(write(tmp_path, text), output=tmp_path / "res", name="lcpre", progress=False)
    err = exc.value
    assert err.path == "capture.interfaces[1]" and "r1 has eth0, eth1, eth2" in err.message
    assert "capture.interfaces[2]" in err.message and "no link between h1 and h4" in err.message
    assert "interfaces[0]" not in err.message and "interfaces[3]" not in err.message
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_during_a_run_exits_as_a_shell_would_say(sig, code):
    import signal

    from testbed.errors import Interrupted
    from testbed.run.runner import interrupted
    from testbed.signals import stop_signals_raise
    with pytest.raises(Interrupted) as exc:
        with stop_signals_raise(interrupted, once=True):
            os.kill(os.getpid(), getattr(signal, sig))
            signal.sigtimedwait([], 0.5)  # let the handler run
    assert exc.value.exit_code == code and sig in str(exc.value)


def test_a_sweep_point_the_link_backend_cannot_run_is_refused_before_the_first_run(
        tmp_path, no_up):
    """bufferbloat's aqm sweep ran fifo and codel, then failed at fq_codel (which the
    userspace backend could not do then) with its earlier runs already spent. Here the
    point it cannot run duplicates packets (that needs sch_netem)."""
    text = ("name: aqm-pre\ntopology: {topo}\nduration: 2s\n"
            "matrix: {{dup: ['0%', '1%']}}\n"
            "flows:\n  - {{name: bulk, from: h1, to: h3}}\n")
    topo = tmp_path / "topo.yaml"
    topo.write_text("variables: {dup: '0%'}\n---\nname: t\nnodes:\n  h1: {kind: host}\n"
                    "  h3: {kind: host}\n  r1: {kind: router}\n  r2: {kind: router}\nlinks:\n"
                    "  - endpoints: [h1, r1]\n  - endpoints: [r1, r2]\n    rate: 10mbit\n"
                    "    duplicate: '{{ dup }}'\n  - endpoints: [r2, h3]\n")
    path = tmp_path / "wl.yaml"
    path.write_text(text.format(topo=topo))
    with pytest.raises(PreflightError, match="no run was started: at dup=1%") as exc:
        run_workload(path, output=tmp_path / "res", name="aqmpre", progress=False,
                     link_backend="userspace")
    assert "duplicate" in str(exc.value) and "dup=0%" not in str(exc.value)
    assert not (tmp_path / "res").exists()
