"""Workload files: templating, strict schema, matrix expansion."""

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.workload import expand_points, load_source, load_workload

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: str, header: str = "") -> Path:
    (tmp_path / "topo.yaml").write_text("name: t\n")
    p = tmp_path / "wl.yaml"
    p.write_text((header + "---\n" if header else "") + body)
    return p


BASIC = """\
name: basic
topology: topo.yaml
duration: 5s
flows:
  - {name: a, from: h1, to: h3, cc: "{{ cc }}"}
  - {name: u, from: h2, to: h4, protocol: udp, rate: 10mbit}
  - {name: r, from: h2, to: h4, rr: {request: 100B, response: 10KB, think: 5ms}}
"""


def test_basic_workload_parses_with_defaults_and_overrides(tmp_path):
    p = write(tmp_path, BASIC, "variables:\n  cc: cubic\n")
    wl = load_workload(p)
    assert [f.name for f in wl.flows] == ["a", "u", "r"]
    assert wl.flows[0].cc == "cubic" and wl.flows[0].kind == "bulk"
    assert wl.flows[1].rate.bps == 10e6 and wl.flows[1].protocol == "udp"
    assert wl.flows[2].rr.response.bytes == 10_000 and wl.flows[2].kind == "rr"
    assert wl.topology_path == (tmp_path / "topo.yaml").resolve()
    assert load_workload(p, {"cc": "bbr"}).flows[0].cc == "bbr"


def test_unknown_key_names_file_path_and_line(tmp_path):
    p = write(tmp_path, BASIC.replace("cc: \"{{ cc }}\"}", "cc: cubic, colour: red}"))
    with pytest.raises(ConfigError) as exc:
        load_workload(p)
    assert exc.value.path == "flows[0].colour"
    assert exc.value.file == str(p) and exc.value.line == 5
    assert "allowed here" in str(exc.value)


@pytest.mark.parametrize("key, path, guess", [
    ("protocl", "flows[0].protocl", "protocol"),
    ("src", "flows[0].src", "from"),
    ("congestion_control", "flows[0].congestion_control", "cc"),
])
def test_unknown_flow_key_suggests_the_key_meant(tmp_path, key, path, guess):
    p = write(tmp_path, f"topology: topo.yaml\nflows:\n  - {{from: h1, to: h3, {key}: x}}\n")
    with pytest.raises(ConfigError) as exc:
        load_workload(p)
    assert exc.value.path == path
    assert f"did you mean {guess!r}?" in str(exc.value)


def test_unknown_top_key_suggests_the_key_meant(tmp_path):
    p = write(tmp_path, "topology: topo.yaml\nrepeats: 3\nflows: [{from: h1, to: h3}]\n")
    with pytest.raises(ConfigError, match="did you mean 'repeat'"):
        load_source(p)


def test_undefined_variable_is_an_error(tmp_path):
    p = write(tmp_path, BASIC)
    with pytest.raises(ConfigError, match="--set"):
        load_workload(p)


@pytest.mark.parametrize("flow, path, words", [
    ("{from: h1, to: h3, protocol: udp}", "flows[0]", "rate"),
    ("{from: h1, to: h3, duration: 1s, size: 1MB}", "flows[0].size", "not both"),
    ("{from: h1, to: h3, protocol: sctp}", "flows[0].protocol", "tcp or udp"),
    ("{from: h1, to: h3, count: 0}", "flows[0].count", ">= 1"),
    ("{from: h1, to: h3, start: soon}", "flows[0].start", "duration"),
    ("{from: h1, to: h3, cc: 'Cubic!'}", "flows[0].cc", "congestion control"),
    ("{from: h1, to: h3, protocol: udp, rate: 1mbit, cc: bbr}", "flows[0].cc", "tcp flows only"),
    ("{from: h1}", "flows[0]", "'to:'"),
    ("{from: h1, to: h3, rr: {request: 1B}}", "flows[0].rr", "response"),
])
def test_flow_errors(tmp_path, flow, path, words):
    p = write(tmp_path, f"topology: topo.yaml\nflows:\n  - {flow}\n")
    with pytest.raises(ConfigError) as exc:
        load_workload(p)
    assert exc.value.path == path
    assert words in str(exc.value)


def test_missing_topology_file(tmp_path):
    p = write(tmp_path, "topology: nope.yaml\nflows:\n  - {from: a, to: b}\n")
    with pytest.raises(ConfigError, match="relative to the workload"):
        load_workload(p)


def test_duplicate_flow_names(tmp_path):
    p = write(tmp_path, "topology: topo.yaml\nflows:\n  - {name: x, from: a, to: b}\n"
                        "  - {name: x, from: a, to: b}\n")
    with pytest.raises(ConfigError, match="already used"):
        load_workload(p)


def test_matrix_product_repeat_and_pinning(tmp_path):
    body = "topology: topo.yaml\nmatrix:\n  cc: [cubic, bbr]\n  loss: [0%, 1%, 5%]\nrepeat: 2\n" \
           "description: 'loss {{ loss }}'\nflows:\n  - {from: h1, to: h3, cc: '{{ cc }}'}\n"
    src = load_source(write(tmp_path, body))
    points = expand_points(src)
    assert len(points) == 12
    assert points[0].point == {"cc": "cubic", "loss": "0%"} and points[6].repetition == 1
    assert points[6].point == points[0].point       # repetitions interleaved
    pinned = expand_points(src, {"loss": "1%"}, repeat=1)
    assert [p.variables["loss"] for p in pinned] == ["1%", "1%"]
    assert [load_workload(src.file, p.variables, source=src).flows[0].cc for p in pinned] == ["cubic", "bbr"]


def test_body_variables_are_rejected(tmp_path):
    p = write(tmp_path, "variables: {a: 1}\ntopology: topo.yaml\nflows: [{from: a, to: b}]\n")
    with pytest.raises(ConfigError, match="first document"):
        load_source(p)


@pytest.mark.parametrize("path", sorted((REPO / "workloads").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_workloads_load_at_every_point(path):
    assert path.read_text().startswith("#"), "each workload starts with a comment header"
    src = load_source(path)
    for point in expand_points(src):
        wl = load_workload(path, point.variables, source=src)
        assert wl.flows
