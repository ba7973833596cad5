"""Python children testbed starts as root import nothing from the caller's directory:
a ``json.py`` there (every child imports json) must not run (no root needed: the child
is started as the driver starts it, minus the namespace)."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from testbed.traffic.base import FlowPlan
from testbed.traffic.builtin import BuiltinDriver
from testbed.workload.model import Flow


class PlainNode:
    """A node that starts processes right here (the driver's own Popen arguments)."""

    name = "h1"

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, **kwargs)


def evil_directory(tmp_path: Path) -> tuple[Path, Path]:
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "MARKER"
    (evil / "json.py").write_text(f"open({str(marker)!r}, 'w').write('ran as ' + __name__)\n")
    return evil, marker


def test_the_builtin_agent_does_not_import_from_the_callers_directory(tmp_path, monkeypatch):
    evil, marker = evil_directory(tmp_path)
    monkeypatch.chdir(evil)
    out = tmp_path / "raw"
    flow = Flow(name="f", src="h1", dst="h2")
    # a port nothing listens on: the client starts, imports, fails to connect, exits
    plan = FlowPlan(flow=flow, port=9, src_ip="127.0.0.1", dst_ip="127.0.0.1", seconds=1,
                    out_dir=out)
    proc = BuiltinDriver().start(PlainNode(), plan)
    assert proc.wait(30) is not None
    assert plan.client_err.exists() and "Traceback" not in plan.client_err.read_text()
    assert not marker.exists(), marker.read_text()


def test_the_link_engine_is_started_with_P_in_root(monkeypatch, tmp_path):
    """Its start needs a namespace and NFQUEUE (integration); here: how it is started."""
    from testbed.emulation import enginectl
    from testbed.emulation.delayline import DelayConfig
    seen: dict = {}

    class Stop(Exception):
        pass

    def popen(argv, **kwargs):
        seen.update(argv=argv, **kwargs)
        raise Stop
    monkeypatch.setattr(enginectl.subprocess, "Popen", popen)
    monkeypatch.setattr(enginectl, "enter", lambda netns: contextlib.nullcontext())
    with pytest.raises(Stop):
        enginectl.put_lanes(tmp_path, {("ns", 1): DelayConfig()}, owner_tag="t")
    assert seen["argv"][1:4] == ["-P", "-m", enginectl.MODULE] and seen["cwd"] == "/"
    assert all(Path(a).is_absolute() for a in seen["argv"] if "/" in a)
