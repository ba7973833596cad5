"""testbed.down() and testbed.clean() from Python, on real namespaces.

``clean()`` without a name acts on every instance of the machine, other test
runs' too; it is tested in a child process with its own mount namespace (a
private, empty /run/netns) and its own TESTBED_RUN_DIR, where the only
instances are the ones that child makes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest
from tb_helpers import leftovers

import testbed
from testbed.kernel import netns
from testbed.realize import state

pytestmark = pytest.mark.root
_count = itertools.count()
TOPO = """
name: api
nodes:
  h1: {cc: reno}
  h2: {cc: reno}
links:
  - endpoints: [h1, h2]
"""


@pytest.fixture
def names():
    """Instance names of this test (prefix ac); whatever they left is removed after it."""
    made = [f"ac{os.getpid() % 100000}x{next(_count)}" for _ in range(2)]
    yield made
    for name in made:
        testbed.down(name)
        assert leftovers(name) == []


@pytest.fixture
def topo(tmp_path):
    path = tmp_path / "topo.yaml"
    path.write_text(TOPO)
    return path


def test_down_returns_what_it_removed_and_none_when_nothing_is_up(topo, names):
    name = names[0]
    net = testbed.up(topo, name=name)
    sleeper = net["h1"].popen(["sleep", "60"])
    report = testbed.down(name)
    assert isinstance(report, testbed.Teardown) and report.instance == name
    assert report.namespaces == [f"tb-{name}-h1", f"tb-{name}-h2"]
    assert sleeper.pid in report.processes
    assert sleeper.wait(timeout=5) != 0
    assert leftovers(name) == []
    assert testbed.down(name) is None


def test_down_finds_an_instance_by_its_tags_when_the_journal_is_gone(topo, names):
    name = names[0]
    testbed.up(topo, name=name)
    state.Journal(name).remove()
    report = testbed.down(name)
    assert report is not None and len(report.namespaces) == 2
    assert leftovers(name) == []


def test_clean_with_a_name_removes_that_instance_only(topo, names):
    drop, keep = names
    testbed.up(topo, name=drop)
    testbed.up(topo, name=keep)
    cleaned = testbed.clean(drop)
    assert isinstance(cleaned, testbed.Cleaned)
    assert [t.instance for t in cleaned.instances] == [drop]
    assert leftovers(drop) == []
    assert len(leftovers(keep)) == 3        # two namespaces and the state directory


CHILD = """
import json, os, sys
import testbed
from testbed.kernel import netns
from testbed.realize import state, teardown

topo, a, b, foreign = sys.argv[1:]
testbed.up(topo, name=a)
testbed.up(topo, name=b)
state.Journal(b).remove()                   # as after a kill -9 before it was written
with netns.Namespaces() as spaces:          # looks like ours, but carries no tag
    with spaces.create(foreign):
        pass
before = teardown.leftovers()
cleaned = testbed.clean()
print(json.dumps({"before": before, "cleaned": [t.instance for t in cleaned.instances],
                  "namespaces": [n for c in cleaned.instances for n in c.namespaces],
                  "left": netns.list_names(), "run_dir": state.RUN_DIR.exists()}))
with netns.Namespaces() as spaces:
    spaces.remove(foreign)
"""


def test_clean_removes_every_instance_and_spares_foreign_namespaces(topo, tmp_path):
    a, b = (f"ac{os.getpid() % 100000}c{i}" for i in range(2))
    foreign = f"tb-ac{os.getpid() % 100000}f-h1"
    script = textwrap.dedent(CHILD)
    # a private mount namespace with an empty /run/netns: clean() there sees only this child's
    shell = 'mkdir -p /run/netns && mount -t tmpfs ac-netns /run/netns && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "sh",
         sys.executable, "-c", script, str(topo), a, b, foreign],
        env={**os.environ, "TESTBED_RUN_DIR": str(tmp_path / "run")},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["before"] == {a: [f"tb-{a}-h1", f"tb-{a}-h2"], b: [f"tb-{b}-h1", f"tb-{b}-h2"]}
    assert out["cleaned"] == [a, b]
    assert sorted(out["namespaces"]) == sorted(n for ns in out["before"].values() for n in ns)
    assert out["left"] == [foreign] and not out["run_dir"]
    # nothing of it shows outside the child's mount namespace
    assert not any(n.startswith((f"tb-{a}-", f"tb-{b}-", foreign)) for n in netns.list_names())
