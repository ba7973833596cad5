"""``testbed run --testbed NAME`` against a testbed brought up with ``testbed up``
(root, CLI as a user runs it): the run uses the testbed as it is, leaves it up,
and leaves none of its own processes; a second run on the same testbed works."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tb_helpers import leftovers, run_cli

from testbed.realize import state

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

WORKLOAD = """\
name: it-attach
topology: {topo}
duration: 2s
capture: {{enabled: false}}
flows:
  - {{name: bulk, from: h1, to: h3, cc: cubic}}
"""


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_run_against_a_testbed_already_up_leaves_it_up(tmp_path, clean_instance):
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.format(topo=REPO / "topologies" / "dumbbell.yaml"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run_cli("up", str(REPO / "topologies" / "dumbbell.yaml"), "--name", clean_instance,
            "--set", "rate=20mbit", "--set", "delay=5ms", env=env)
    try:
        run_dirs = []
        for _ in range(2):
            p = run_cli("run", str(wl), "--testbed", clean_instance, "--output",
                        str(tmp_path / "res"), "--quiet", env=env, timeout=120)
            run_dirs.append(Path(p.stdout.strip().splitlines()[-1]))
            assert state.instance_dir(clean_instance).exists()      # still up
            assert leftovers(clean_instance)
        for run_dir in run_dirs:
            result = json.loads((run_dir / "result.json").read_text())
            manifest = json.loads((run_dir / "manifest.json").read_text())
            assert result["status"] == "complete", result["error"]
            assert manifest["testbed"] == {"instance": clean_instance, "attached": True,
                                           "link_backend": manifest["testbed"]["link_backend"]}
            [flow] = result["flows"]
            # the testbed's own link (20 Mbit/s, 2 x 5 ms), not the topology file's defaults
            assert 0 < flow["goodput_bps"] <= 20e6 * 1.02
            assert flow["rtt_ms"]["min_rtt"] >= 9.5
            procs = json.loads((run_dir / "raw" / "processes.json").read_text())
            assert {p["role"] for p in procs} == {"server", "client"}
            assert not [p for p in procs if alive(p["pid"])]
        status = run_cli("status", "--name", clean_instance, env=env)
        assert clean_instance in status.stdout
    finally:
        run_cli("down", "--name", clean_instance, env=env, check=False)
    assert not leftovers(clean_instance)
