"""Names that become paths: instance names, workload names, run ids, files a remote host
lists. Each is one plain component that keeps its path inside its base directory, checked
before anything there is read, written or removed (no root, no namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import testbed
from testbed.errors import ConfigError
from testbed.files import contained
from testbed.model.topology import check_instance_name
from testbed.realize import state
from testbed.results import make_run_dir
from testbed.workload import load_workload

BAD_NAMES = ["", ".", "..", "../x", "/abs", "x/y", "a\0b"]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    d = tmp_path / "run"
    monkeypatch.setattr(state, "RUN_DIR", d)
    return d


@pytest.mark.parametrize("name", BAD_NAMES)
def test_contained_refuses_what_is_not_one_plain_component(tmp_path, name):
    with pytest.raises(ConfigError, match="cannot be used as a name inside"):
        contained(tmp_path / "base", name)


@pytest.mark.parametrize("name", ["a", "run-1", ".hidden", "x\n", "..."])
def test_contained_accepts_plain_names(tmp_path, name):
    assert contained(tmp_path, name) == tmp_path / name


def test_contained_refuses_a_symlink_that_leads_outside(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "out").symlink_to(tmp_path)
    (tmp_path / "base" / "in").symlink_to(tmp_path / "base" / "sub")
    with pytest.raises(ConfigError, match="leads outside"):
        contained(tmp_path / "base", "out")
    assert contained(tmp_path / "base", "in") == tmp_path / "base" / "in"


@pytest.mark.parametrize("name", [*BAD_NAMES, ".hidden", "x\n", "1abc", "a" * 25, "host.json",
                                  "a b", "a.b"])
def test_instance_names_follow_the_rule_of_up(name):
    with pytest.raises(ConfigError) as exc:
        check_instance_name(name)
    assert str(exc.value).startswith("--name: instance name ")


@pytest.mark.parametrize("name", ["a", "hn1", "A-b_2", "a" * 24])
def test_instance_names_that_up_accepts(name):
    assert check_instance_name(name) == name


@pytest.mark.parametrize("name", ["..", "/etc", "x/y", ".host.lock", "x\n"])
def test_no_path_is_built_from_a_bad_instance_name(run_dir, name):
    with pytest.raises(ConfigError, match="instance name"):
        state.instance_dir(name)
    with pytest.raises(ConfigError, match="instance name"):
        state.Journal(name).read_state()
    with pytest.raises(ConfigError, match="instance name"):
        state.pick_instance(name)


def test_journal_remove_of_dotdot_cannot_empty_the_parent(run_dir):
    """The issue: ``down --name ..`` emptied the directory holding /run/testbed."""
    run_dir.mkdir()
    (run_dir.parent / "precious").write_text("keep")
    with pytest.raises(ConfigError):
        state.Journal("..").remove()
    assert (run_dir.parent / "precious").read_text() == "keep"


def test_attach_checks_the_name_before_reading_any_state(run_dir):
    # a state file where RUN_DIR/.. would find it: attach("..") must not read it
    run_dir.mkdir()
    (run_dir.parent / "state.json").write_text(json.dumps({"nodes": {}, "links": []}))
    with pytest.raises(ConfigError, match="instance name '..' is not a safe name"):
        testbed.attach("..")


def test_only_instance_names_count_as_instances(run_dir):
    run_dir.mkdir()
    for name in ("good", ".hidden", "bad name"):
        (run_dir / name).mkdir()
    (run_dir / "host.json").write_text("{}")
    assert state.instances() == ["good"]


@pytest.mark.parametrize("workload", ["..", ".", "a/b", "/abs", ""])
def test_a_run_directory_stays_inside_the_output(tmp_path, workload):
    out = tmp_path / "out" / "res"
    with pytest.raises(ConfigError, match="workload name"):
        make_run_dir(workload, out)
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_a_workload_directory_that_is_a_symlink_out_is_refused(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "wl").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="leads outside"):
        make_run_dir("wl", out)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".hidden", "x/y", '"x\\n"', "a" * 256])
def test_workload_names_that_would_move_or_hide_the_results_are_refused(tmp_path, name):
    (tmp_path / "topo.yaml").write_text("name: t\n")
    wl = tmp_path / "wl.yaml"
    wl.write_text(f"name: {name}\ntopology: topo.yaml\nflows:\n  - {{from: h1, to: h2}}\n")
    with pytest.raises(ConfigError) as exc:
        load_workload(wl)
    assert exc.value.path == "name" and exc.value.file == str(wl)
    assert "workload name" in exc.value.message


def test_files_are_replaced_whole_with_the_mode_asked(tmp_path):
    from testbed.files import write_atomic
    target = tmp_path / "f.json"
    write_atomic(target, "one")
    write_atomic(target, "two", mode=0o600)
    assert target.read_text() == "two" and (os.stat(target).st_mode & 0o777) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]      # no temporary left


def test_a_relative_run_dir_setting_becomes_absolute(tmp_path):
    """Children start in "/": the state paths handed to them must not be relative."""
    env = dict(os.environ, TESTBED_RUN_DIR="rel/run")
    out = subprocess.run([sys.executable, "-c", "from testbed.realize import state; "
                          "print(state.RUN_DIR)"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == str(tmp_path / "rel" / "run")


@pytest.mark.parametrize("bad", ["..", "/tmp/x", "a/b", "", "x\n"])
def test_clean_in_the_python_api_checks_the_name_like_down(bad):
    """testbed.clean('..') returned an empty Cleaned instead of refusing the name."""
    import testbed
    with pytest.raises(ConfigError, match="instance name"):
        testbed.clean(bad)
