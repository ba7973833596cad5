"""Every CLI way in that takes a name or a path, against the same table of values.

An instance name (``--name``, ``--testbed``) follows the rule of ``up``; a directory
(``--output``, ``--remote-dir``) may be any path but an empty one, one with control
characters or an over-long part; a workload's name keeps its results directory inside
the output. A refused value is a usage error (exit 2) whose one error line names the
option (or the file and YAML path), and nothing is created, read into or removed: a
sentinel directory given as the name survives ``down --name <its path>``.

Runs in-process against a temporary RUN_DIR; no file named here exists, so nothing can
be brought up whatever the outcome (as root too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.cli import main as cli
from testbed.cli import remote as cli_remote
from testbed.errors import TestbedError
from testbed.realize import state

LONG_NAME = "a" * 25            # one over the limit of instance names
LONG_PART = "a" * 256           # one over a path component's limit
VALUES = ["..", "/abs", "x/y", "x\n", ".hidden", "", "long"]
# which values each kind of option accepts
ACCEPTS = {"instance": set(), "directory": {"..", "/abs", "x/y", ".hidden"}}

# (argv with V where the value goes, kind, the option the error must name)
ENTRY_POINTS = [
    (["up", "missing.yaml", "--dry-run", "--name", "V"], "instance", "--name"),
    (["plan", "missing.yaml", "--name", "V"], "instance", "--name"),
    (["down", "--name", "V"], "instance", "--name"),
    (["status", "--name", "V"], "instance", "--name"),
    (["exec", "--name", "V", "h1", "--", "true"], "instance", "--name"),
    (["exec", "h1", "--name", "V", "--", "true"], "instance", "--name"),
    (["clean", "--name", "V"], "instance", "--name"),
    (["run", "missing.yaml", "--name", "V"], "instance", "--name"),
    (["run", "missing.yaml", "--testbed", "V"], "instance", "--testbed"),
    (["run", "missing.yaml", "--output", "V"], "directory", "--output"),
    (["validate", "--testbed", "V"], "instance", "--testbed"),
    (["validate", "missing.yaml", "--name", "V"], "instance", "--name"),
    (["link", "show", "--name", "V"], "instance", "--name"),
    (["link", "show", "--testbed", "V"], "instance", "--testbed"),
    (["link", "set", "r1-r2", "delay=1ms", "--name", "V"], "instance", "--name"),
    (["--host", "u@192.0.2.1", "down", "--name", "V"], "instance", "--name"),
    (["--host", "u@192.0.2.1", "run", "missing.yaml", "--testbed", "V"], "instance", "--testbed"),
    (["--host", "u@192.0.2.1", "--remote-dir", "V", "status"], "directory", "--remote-dir"),
]


class NoConnecting(TestbedError):
    """Raised instead of connecting: the remote command got past its checks."""


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A RUN_DIR, a cwd and sentinels where the bad names point; returns the sentinel."""
    run = tmp_path / "run"
    (run / "x" / "y").mkdir(parents=True)
    (run / "x" / "y" / "keep").write_text("relative sentinel")
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("absolute sentinel")
    (tmp_path / "cwd").mkdir()
    monkeypatch.setattr(state, "RUN_DIR", run)
    monkeypatch.chdir(tmp_path / "cwd")

    def refuse(*args, **kwargs):
        raise NoConnecting("would connect now")
    monkeypatch.setattr("testbed.remote.session.Session", refuse)
    return sentinel


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else "/")
            for p in sorted(root.rglob("*"))}


def actual(value: str, kind: str, sentinel: Path) -> str:
    if value == "/abs":
        return str(sentinel)
    if value == "long":
        return LONG_NAME if kind == "instance" else LONG_PART
    return value


def run_cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:       # argparse's usage errors
        return int(exc.code)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("template, kind, option", ENTRY_POINTS,
                         ids=[" ".join(e[0]) for e in ENTRY_POINTS])
def test_names_and_paths_on_the_command_line(world, tmp_path, capsys, template, kind, option,
                                             value):
    text = actual(value, kind, world)
    argv = [text if a == "V" else a for a in template]
    before = snapshot(tmp_path)
    code = run_cli(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    if value in ACCEPTS[kind]:
        assert option not in err, err       # whatever else went wrong, not this value
    else:
        assert code == 2, err
        assert len(errors) == 1 and option in errors[0], err
        assert repr(text) in errors[0], err
    assert snapshot(tmp_path) == before
    assert (world / "keep").read_text() == "absolute sentinel"


WORKLOAD_NAMES = {"..": False, "/abs": False, "x/y": False, "x\n": False, ".hidden": False,
                  "": True, "long": False, "ok-name.v2": True}


@pytest.mark.parametrize("value, accepted", WORKLOAD_NAMES.items())
def test_workload_names_from_the_file(world, tmp_path, capsys, value, accepted):
    """A workload's ``name:`` (empty: the file's stem) names a results directory."""
    text = actual(value, "directory", world)
    wl = tmp_path / "cwd" / "wl.yaml"
    wl.write_text(f"name: {json.dumps(text)}\ntopology: missing-topology.yaml\n"  # JSON is YAML
                  "flows:\n  - {from: h1, to: h2}\n")
    before = snapshot(tmp_path)
    code = run_cli(["run", str(wl), "--output", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert code == 2, err
    if accepted:       # past the name: the missing topology is what stops it
        assert "missing-topology.yaml" in err and "workload name" not in err, err
    else:
        assert f"{wl}" in err and ": name: workload name" in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("value", ["0", "-1", "1000000000", "x"])
def test_repeat_is_bounded_on_the_command_line(value, capsys):
    """--repeat 1000000000 grew the matrix by ~25 MB/s until stopped (a new user's review)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "workloads/cubic-vs-bbr.yaml", "--repeat", value])
    assert exc.value.code == 2 and "--repeat" in capsys.readouterr().err
