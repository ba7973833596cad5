"""Templates of topology and workload files run in jinja2's sandbox: a shared file can
compute values but cannot run code as the root user who renders it."""

from pathlib import Path

import jinja2
import pytest

from testbed.cli import main as cli
from testbed.errors import ConfigError
from testbed.model.document import render, split_variables
from testbed.workload import expand_points, load_source, load_workload

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TOPOLOGIES = sorted((REPO / "topologies").glob("*.yaml"))
SHIPPED_WORKLOADS = sorted((REPO / "workloads").glob("*.yaml"))

# each would run `touch MARKER` as the user rendering the file, outside a sandbox
ESCAPES = [
    "cycler.__init__.__globals__.os.popen('touch MARKER').read()",
    "lipsum.__globals__['os'].system('touch MARKER')",
    "joiner.__init__.__globals__.os.system('touch MARKER')",
    "''.__class__.__mro__[1].__subclasses__()",
]


def _topology(tmp_path: Path, expression: str) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    topo = tmp_path / "t.yaml"
    topo.write_text("name: t\n"
                    f"description: \"{{{{ {expression.replace('MARKER', str(marker))} }}}}\"\n"
                    "nodes: {h1: {}, h2: {}}\nlinks:\n  - endpoints: [h1, h2]\n")
    return topo, marker


@pytest.mark.parametrize("expression", ESCAPES)
def test_plan_of_a_topology_that_escapes_runs_nothing_and_says_where(tmp_path, capsys,
                                                                     expression):
    topo, marker = _topology(tmp_path, expression)
    code = cli.main(["plan", str(topo)])
    err = capsys.readouterr().err
    assert code == 2
    assert not marker.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{topo}:2: template:" in err and "is unsafe" in err and "sandboxed" in err


def test_a_template_cannot_change_its_variables(tmp_path):
    text = "variables:\n  xs: [1]\n---\nname: t\ndescription: \"{{ xs.append(2) }}\"\n"
    with pytest.raises(ConfigError) as info:
        render(text, "f.yaml", {})
    assert info.value.line == 5 and "sandboxed" in info.value.message


@pytest.mark.parametrize("where", ["name", "flow"])
def test_a_workload_that_escapes_runs_nothing_and_says_where(tmp_path, where):
    marker = tmp_path / "marker"
    bad = "{{ cycler.__init__.__globals__.os.popen('touch %s').read() }}" % marker
    (tmp_path / "topo.yaml").write_text((REPO / "topologies" / "dumbbell.yaml").read_text())
    wl = tmp_path / "wl.yaml"
    # the name is read by the lenient first pass (load_source), a flow's cc only by the
    # strict load of a run (load_workload)
    name, cc = (f'"w{bad}"', "cubic") if where == "name" else ("w", f'"{bad}"')
    wl.write_text(f"name: {name}\ntopology: topo.yaml\n"
                  f"flows: [{{from: h1, to: h2, cc: {cc}}}]\n")
    with pytest.raises(ConfigError) as info:
        source = load_source(wl)
        load_workload(wl, {}, source=source)
    assert not marker.exists()
    assert info.value.file == str(wl) and info.value.line == (1 if where == "name" else 3)
    assert "sandboxed" in info.value.message


def _plain_render(text: str, file: str, variables: dict) -> str:
    """How files were rendered before the sandbox (an unrestricted environment)."""
    defaults, body, _ = split_variables(text, file)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(body).render({**defaults, **variables})


@pytest.mark.parametrize("path", SHIPPED_TOPOLOGIES, ids=lambda p: p.name)
def test_shipped_topologies_render_as_before(path):
    text = path.read_text()
    assert render(text, str(path), {})[0] == _plain_render(text, str(path), {})


@pytest.mark.parametrize("path", SHIPPED_WORKLOADS, ids=lambda p: p.name)
def test_shipped_workloads_render_as_before_at_every_point(path):
    text = path.read_text()
    for point in expand_points(load_source(path)):
        assert render(text, str(path), point.variables)[0] == \
            _plain_render(text, str(path), point.variables)
