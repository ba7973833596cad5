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


SWEPT = """\
variables:
  rate: 100mbit
  loss: 1%
---
name: it-attach-vars
topology: {topo}
duration: 2s
capture: {{enabled: false}}
flows:
  - {{name: bulk, from: h1, to: h3, cc: cubic}}
"""


def test_attached_testbed_that_contradicts_the_variables_is_refused_or_marked(tmp_path, clean_instance):
    """Workload variables rate 100mbit / loss 1% on a testbed built with 10mbit / 0%:
    refused before a run directory exists; with the testbed's values it runs and the
    manifest shows the links as they were; allowed, the run is marked suspect."""
    import testbed
    from testbed.errors import ConfigError
    from testbed.run.workload import run_workload
    wl = tmp_path / "wl.yaml"
    wl.write_text(SWEPT.format(topo=REPO / "topologies" / "dumbbell.yaml"))
    res = tmp_path / "res"
    net = testbed.up(REPO / "topologies" / "dumbbell.yaml", name=clean_instance,
                     variables={"rate": "10mbit", "loss": "0%", "delay": "5ms"})
    with net:
        with pytest.raises(ConfigError) as exc:
            run_workload(wl, testbed_name=clean_instance, output=res, progress=False)
        assert exc.value.exit_code == 2 and exc.value.path == "variables"
        assert "rate=100mbit" in str(exc.value) and "loss=1%" in str(exc.value)
        assert "--set rate=10mbit --set loss=0%" in str(exc.value)
        assert not res.exists()

        [ok] = run_workload(wl, variables={"rate": "10mbit", "loss": "0%"},
                            testbed_name=clean_instance, output=res, progress=False)
        manifest = json.loads((ok / "manifest.json").read_text())
        result = json.loads((ok / "result.json").read_text())
        assert result["conditions_mismatch"] == [] and result["variables"]["rate"] == "10mbit"
        links = {d["direction"]: d for d in manifest["links_before"]}
        assert links["r1->r2"]["rate_bps"] == 10e6 and links["r1->r2"]["delay_s"] == 0.005
        assert links["r1->r2"]["loss"] == 0.0 and links["r1->r2"]["emulated"]
        assert links["r1->r2"]["backend"] == net.link_backend
        assert not links["h1->r1"]["emulated"]
        assert "rate: 10mbit" in (ok / manifest["topology"]["rendered"]).read_text()

        cli = run_cli("run", str(wl), "--testbed", clean_instance, "--output", str(res),
                      "--allow-mismatch", "--quiet")      # the CLI's way to say it
        [marked] = [Path(line) for line in cli.stdout.split()]
        result = json.loads((marked / "result.json").read_text())
        assert result["suspect"] and any("differ" in r for r in result["suspect_reasons"])
        found = {(m["variable"], m["where"]) for m in result["conditions_mismatch"]}
        assert {("rate", "as built"), ("loss", "as built"), ("rate", "in force")} <= found
        assert result["flows"][0]["goodput_bps"] <= 10e6 * 1.02      # the link it really had
