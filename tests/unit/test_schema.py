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
