"""Pulling run directories home: the remote host names the files, so a name that would
land outside the local run directory is refused before anything of it is written (a
fake SFTP server stands in for the host)."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.remote import ssh
from testbed.remote.errors import UnsafeRemoteName
from testbed.remote.session import RemoteOptions, Session


@dataclass
class Attr:
    filename: str
    st_mode: int


class FakeSFTP:
    """A listing the server chose: {remote dir: {name: file content, or None for a dir}}."""

    def __init__(self, tree: dict[str, dict[str, bytes | None]]) -> None:
        self.tree = tree

    def listdir_attr(self, path: str) -> list[Attr]:
        return [Attr(name, stat.S_IFDIR if data is None else stat.S_IFREG)
                for name, data in self.tree[path].items()]

    def listdir(self, path: str) -> list[str]:
        return list(self.tree[path])

    def stat(self, path: str) -> None:
        if path not in self.tree:
            raise FileNotFoundError(path)

    def get(self, src: str, dst: str) -> None:
        [data] = [names[name] for parent, names in self.tree.items() for name in names
                  if f"{parent}/{name}" == src]
        Path(dst).write_bytes(data)


def connection(tree: dict[str, dict[str, bytes | None]]) -> ssh.Connection:
    conn = ssh.Connection(target=ssh.Target("u@h", "h", 22, "u"), client=None)
    conn._sftp = FakeSFTP(tree)
    return conn


@pytest.mark.parametrize("name", ["../escaped", "ABS", "..", ".", "a/../../b", "nul\0"])
def test_a_file_name_that_leaves_the_run_directory_is_refused(tmp_path, name):
    local = tmp_path / "home" / "run"
    name = str(tmp_path / "abs") if name == "ABS" else name
    conn = connection({"/r": {"ok.json": b"{}", name: b"owned"}})
    with pytest.raises(UnsafeRemoteName, match="u@h lists an entry of /r"):
        conn.get_tree("/r", local)
    assert {p.name for p in tmp_path.rglob("*") if p.is_file()} <= {"ok.json"}


def test_a_local_symlink_is_not_followed_out(tmp_path):
    local = tmp_path / "run"
    local.mkdir()
    (local / "raw").symlink_to(tmp_path)
    conn = connection({"/r": {"raw": None}, "/r/raw": {"x": b"owned"}})
    with pytest.raises(UnsafeRemoteName, match="leads outside"):
        conn.get_tree("/r", local)
    assert not (tmp_path / "x").exists()


def test_plain_names_are_copied_home(tmp_path):
    conn = connection({"/r": {"result.json": b"{}", "raw": None, ".x": b"1"},
                       "/r/raw": {"a.pcap": b"p"}})
    copied = conn.get_tree("/r", tmp_path / "run")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in copied) == \
        ["run/.x", "run/raw/a.pcap", "run/result.json"]


@pytest.mark.parametrize("workload, run_id", [("..", "r1"), ("wl", ".."), ("wl", "ABS")])
def test_workload_and_run_directories_named_by_the_host_stay_in_the_output(tmp_path, workload,
                                                                        run_id):
    run_id = str(tmp_path / "abs") if run_id == "ABS" else run_id
    session = Session.__new__(Session)          # no SSH: only what _pull uses
    session.conn = connection({"/s/results": {workload: None},
                               f"/s/results/{workload}": {run_id: None},
                               f"/s/results/{workload}/{run_id}": {"result.json": b"{}"}})
    session.options = RemoteOptions()
    out = tmp_path / "out" / "results"
    with pytest.raises(UnsafeRemoteName):
        session._pull("/s/results", out, {"host": "u@h"})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
