"""The pytest plugin: marker and fixture registered, clean skips when not root,
assertion helpers over run directories. (Bringing topologies up is covered by
tests/integration/test_compare_plugin.py, as root.)"""

from __future__ import annotations

import os


from testbed import pytest_plugin
from testbed.analysis.synthetic import FakeFlow, write_run

pytest_plugins = ["pytester"]


def test_plugin_is_registered_by_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("testbed")
    assert any(m.startswith("testbed_root:") for m in pytestconfig.getini("markers"))


def test_not_root_skips_with_the_reason(pytester, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.testbed_root
        def test_marked(testbed):
            raise AssertionError("must not run")

        def test_unmarked_up(testbed):
            testbed.up("no-such-topology.yaml")
            raise AssertionError("must not get here")
    """)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*needs root: testbed builds real network namespaces*"])


def test_check_helper_passes_and_fails(pytester, tmp_path):
    write_run(tmp_path / "runs", "a", variables={"cc": "bbr"}, flows=[FakeFlow("f", "bbr", 80e6)])
    write_run(tmp_path / "runs", "b", variables={"cc": "cubic"}, flows=[FakeFlow("f", "cubic", 8e6)])
    pytester.makepyfile(f"""
        RUNS = [{str(tmp_path / "runs")!r}]

        def test_holds(testbed):
            testbed.check(RUNS, "goodput[cc=bbr] > 5 * goodput[cc=cubic]")
            assert testbed.compare(RUNS).dims == ["cc"]

        def test_fails(testbed):
            testbed.check(RUNS, "goodput[cc=cubic] > 50mbit")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*goodput[[]cc=cubic[]] > 50mbit: fails*"])


def test_unique_instance_names(tmp_path):
    a = pytest_plugin.TestbedFixture(tmp_path, prefix="pt1x0n")
    assert [a._name(), a._name()] == ["pt1x0n0", "pt1x0n1"]
    a._names.clear()
    a.close()  # nothing up: nothing to do, no error
