"""``--set`` names only variables a file knows: else one error, exit 2, nothing created.

Known: a file's ``variables:`` header, every name its template reads, a
workload's matrix keys and, as variables flow from a workload into its
topology, the topology file's variables too.
"""

from pathlib import Path

import pytest

from testbed.cli import main as cli
from testbed.errors import ConfigError
from testbed.model.document import check_topology_file, known_variables
from testbed.workload import expand_points, load_source

REPO = Path(__file__).resolve().parents[2]
DUMBBELL = REPO / "topologies" / "dumbbell.yaml"
LINE = REPO / "topologies" / "line.yaml"
CUBIC_VS_BBR = REPO / "workloads" / "cubic-vs-bbr.yaml"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_known_variables_are_the_header_and_what_the_template_reads():
    text = ("variables:\n  rate: 1mbit\n---\n{% set n = 2 %}{% for i in range(count) %}"
            "x{{ i }}: {{ rate }}{{ n }}{{ env.HOME }}\n{% endfor %}")
    assert known_variables(text, "f.yaml") == {"rate", "count"}


def test_topology_rejects_a_misspelt_variable(capsys):
    code, err = run_cli(capsys, "plan", str(DUMBBELL), "--set", "lose=1%")
    assert code == 2
    assert err.count("\n") == 1 and str(DUMBBELL) in err
    assert "unknown variable 'lose'" in err and "did you mean 'loss'?" in err


def test_topology_names_every_unknown_variable_at_once():
    with pytest.raises(ConfigError) as info:
        check_topology_file(DUMBBELL, {"lose": "1%", "rat": "1mbit", "loss": "1%"})
    assert info.value.file == str(DUMBBELL)
    assert "'lose' (did you mean 'loss'?)" in info.value.message
    assert "'rat' (did you mean 'rate'?)" in info.value.message


def test_topology_accepts_variables_it_declares_or_reads(tmp_path):
    check_topology_file(DUMBBELL, {"loss": "1%", "cc": "bbr"})
    check_topology_file(LINE, {"routers": 3, "hop_delay": "5ms"})
    undeclared = tmp_path / "t.yaml"
    undeclared.write_text("name: t\nnodes: {h1: {}, h2: {}}\nlinks:\n  - endpoints: [h1, h2]\n"
                          "    rate: {{ bottleneck }}\n")
    check_topology_file(undeclared, {"bottleneck": "1mbit"})   # read by the template


def test_env_is_not_a_set_variable():
    with pytest.raises(ConfigError, match="only with --env"):
        check_topology_file(DUMBBELL, {"env": "x"})


def test_workload_rejects_a_misspelt_variable_before_any_run():
    src = load_source(CUBIC_VS_BBR)
    with pytest.raises(ConfigError) as info:
        expand_points(src, {"lose": "5%"})
    assert info.value.file == str(CUBIC_VS_BBR)
    assert "unknown variable 'lose'" in info.value.message
    assert "did you mean 'loss'?" in info.value.message


def test_workload_repeat_is_not_a_variable():
    with pytest.raises(ConfigError, match="--repeat"):
        expand_points(load_source(CUBIC_VS_BBR), {"repeat": 2})


def test_workload_accepts_its_own_matrix_and_topology_variables():
    src = load_source(CUBIC_VS_BBR)
    assert len(expand_points(src, {"mix": "shared"})) == 1        # a matrix key
    assert len(expand_points(src, {"duration": "5s"})) == 3       # the workload's header
    assert len(expand_points(src, {"cc": "bbr"})) == 3            # only the topology reads cc


def test_workload_finds_a_templated_topology_file(tmp_path):
    (tmp_path / "a.yaml").write_text("variables:\n  width: 1\n---\nname: a\n")
    (tmp_path / "b.yaml").write_text("variables:\n  depth: 1\n---\nname: b\n")
    wl = tmp_path / "wl.yaml"
    wl.write_text("matrix:\n  topo: [a, b]\ntopology: '{{ topo }}.yaml'\n"
                  "flows: [{from: h1, to: h2}]\n")
    src = load_source(wl)
    assert len(expand_points(src, {"depth": 2, "width": 3})) == 2
    with pytest.raises(ConfigError, match="did you mean 'depth'"):
        expand_points(src, {"dept": 2})


def test_run_with_an_unknown_variable_exits_2_and_writes_nothing(capsys, tmp_path, monkeypatch):
    import testbed.run.workload

    def reached(*args, **kwargs):
        raise AssertionError("an unknown --set got as far as the preflight")
    monkeypatch.setattr(testbed.run.workload, "preflight", reached)   # never touch the host
    out = tmp_path / "results"
    code, err = run_cli(capsys, "run", str(CUBIC_VS_BBR), "--set", "lose=5%", "--quiet",
                        "--output", str(out))
    assert code == 2 and "did you mean 'loss'?" in err
    assert not out.exists()


def test_validate_rejects_a_misspelt_variable_before_bringing_anything_up(capsys):
    code, err = run_cli(capsys, "validate", str(DUMBBELL), "--set", "lose=1%",
                        "--name", "never-up")
    assert code == 2 and "unknown variable 'lose' (did you mean 'loss'?)" in err, err


def test_python_up_rejects_a_misspelt_variable_before_anything_exists():
    import testbed
    from testbed.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown variable 'lose'.*did you mean 'loss'"):
        testbed.up(DUMBBELL, name="never-up", variables={"lose": "1%"})


def test_a_matrix_key_no_template_reads_is_refused_with_did_you_mean(tmp_path):
    """``buffer:`` for ``queue:`` ran every point at the default queue, silently."""
    wl = tmp_path / "wl.yaml"
    wl.write_text(f"name: wl\ntopology: {DUMBBELL}\nmatrix:\n  buffer: [1bdp, 4bdp]\n"
                  "flows: [{from: h1, to: h3}]\n")
    with pytest.raises(ConfigError) as info:
        expand_points(load_source(wl))
    assert info.value.path == "matrix.buffer" and info.value.file == str(wl)
    assert "did you mean 'queue'?" in info.value.message


def test_matrix_keys_read_by_the_workload_or_its_topology_are_accepted(tmp_path):
    wl = tmp_path / "wl.yaml"
    wl.write_text(f"name: wl\ntopology: {DUMBBELL}\nmatrix:\n  queue: [1bdp, 4bdp]\n"
                  "  cc: [reno]\n  size: [1MB]\nflows: [{from: h1, to: h3, size: '{{ size }}'}]\n")
    assert len(expand_points(load_source(wl))) == 2


def test_every_shipped_workload_reads_its_matrix_keys():
    for path in sorted((REPO / "workloads").rglob("*.yaml")):
        assert expand_points(load_source(path)), path
