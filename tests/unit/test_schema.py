"""`testbed schema` agrees with the loader: examples pass it, unknown keys fail it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.model.document import load
from testbed.model.schema import topology_schema

jsonschema = pytest.importorskip("jsonschema")
TOPOLOGIES = sorted((Path(__file__).parents[2] / "topologies").glob("*.yaml"))


@pytest.mark.parametrize("path", TOPOLOGIES, ids=[p.stem for p in TOPOLOGIES])
def test_example_topologies_match_the_schema(path):
    jsonschema.validate(load(path).data, topology_schema())


def test_schema_rejects_unknown_keys():
    bad = {"name": "t", "nodes": {"h1": {"kind": "host", "colour": "red"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, topology_schema())


def test_cli_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "testbed", "schema"], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out)["title"] == "testbed topology"


def test_schema_accepts_a_schedule():
    topo = {"name": "t", "nodes": {"r1": {"kind": "router"}, "r2": {"kind": "router"}},
            "links": [{"endpoints": ["r1", "r2"], "rate": "10mbit"}],
            "schedule": [{"at": "5s", "for": "2s", "link": "r1-r2", "set": {"loss": "100%"}}]}
    jsonschema.validate(topo, topology_schema())


WORKLOADS = sorted((Path(__file__).parents[2] / "workloads").rglob("*.yaml"))


def test_workload_schema_has_the_loaders_keys():
    from testbed.workload.loader import FLOW_KEYS, TOP_KEYS
    from testbed.workload.schema import workload_schema
    schema = workload_schema()
    assert set(schema["properties"]) == set(TOP_KEYS)
    assert set(schema["properties"]["flows"]["items"]["properties"]) == set(FLOW_KEYS)


@pytest.mark.parametrize("path", WORKLOADS, ids=[p.stem for p in WORKLOADS])
def test_shipped_workloads_match_the_workload_schema(path):
    import yaml
    from testbed.workload import expand_points, load_source, load_workload
    from testbed.workload.schema import workload_schema
    source = load_source(path)
    for point in expand_points(source):
        data = yaml.safe_load(load_workload(path, point.variables, source=source).rendered_text)
        jsonschema.validate(data, workload_schema())


def test_cli_prints_the_workload_schema():
    out = subprocess.run([sys.executable, "-m", "testbed", "schema", "--workload"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["title"] == "testbed workload"
