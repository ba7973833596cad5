"""Children testbed starts as root (the delay daemons, the builtin agent) import nothing
from the directory testbed is run from (root, real namespaces): a ``json.py`` there,
which every one of them would import first, must not run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from testbed.run.workload import run_workload

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

# the bottleneck's delay runs through delay daemons with the userspace backend
WORKLOAD = """\
name: it-children
topology: {topo}
duration: 2s
capture: {{enabled: false}}
flows:
  - {{name: agent, from: h1, to: h3, cc: cubic, driver: builtin}}
"""


def test_children_run_as_root_import_nothing_from_the_callers_directory(tmp_path, monkeypatch,
                                                                          clean_instance):
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "MARKER"
    (evil / "json.py").write_text(f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n")
    monkeypatch.chdir(evil)
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.format(topo=REPO / "topologies" / "dumbbell.yaml"))
    [run_dir] = run_workload(wl, output=tmp_path / "res", name=clean_instance, progress=False)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "complete", result.get("error")
    assert [f["name"] for f in result["flows"]] == ["agent"]
    assert not marker.exists(), marker.read_text()
