"""A corpus of broken topologies, each with the message and YAML path it must produce."""

from pathlib import Path

import pytest

from testbed.cli import main as cli
from testbed.errors import ConfigError
from testbed.instance.network import load_topology, plan_for

REPO = Path(__file__).resolve().parents[2]
CORPUS = sorted((Path(__file__).parent / "broken").glob("*.yaml"))


def _expectations(path: Path) -> tuple[str, str]:
    lines = path.read_text().splitlines()
    expect = lines[0].removeprefix("# expect: ")
    where = lines[1].removeprefix("# path:").strip()
    return expect, where


def test_corpus_is_there():
    assert len(CORPUS) >= 20


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_broken_topology_is_rejected_with_file_and_path(path):
    expect, where = _expectations(path)
    with pytest.raises(ConfigError) as info:
        plan_for(load_topology(path))
    err = info.value
    assert expect in err.message
    assert err.file == str(path)
    assert (err.path or "") == where
    # the one-line message a person sees names the file and the YAML path
    text = str(err)
    assert str(path) in text and where in text


def test_error_carries_line_number(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nnodes: {h1: {}, h2: {}}\nlinks:\n  - endpoints: [h1, h2]\n"
                   "    delay: -1ms\n")
    with pytest.raises(ConfigError) as info:
        load_topology(bad)
    assert info.value.line == 5
    assert str(info.value).startswith(f"{bad}:5: links[0].delay:")


def test_plan_of_a_workload_says_so_and_names_its_topology(capsys):
    code = cli.main(["plan", str(REPO / "workloads" / "cubic-vs-bbr.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert "is undefined" not in err                 # its matrix variable 'mix'
    assert "this is a workload" in err and "dumbbell.yaml" in err and "testbed run" in err
