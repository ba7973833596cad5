"""The pytest plugin's ``testbed`` fixture as root: a topology comes up under a
unique name and is gone after the test, whether the test passed or failed."""

from __future__ import annotations

import pytest

from testbed.kernel import netns

pytestmark = pytest.mark.root
pytest_plugins = ["pytester"]

TOPO = """
name: plugintest
nodes:
  h1: {kind: host}
  h2: {kind: host}
links:
  - endpoints: [h1, h2]
    delay: 5ms
"""


def test_fixture_tears_down_after_pass_and_failure(pytester, tmp_path):
    topo = tmp_path / "topo.yaml"
    topo.write_text(TOPO)
    record = tmp_path / "names.txt"
    pytester.makepyfile(f"""
        import pytest

        def _up(testbed):
            net = testbed.up({str(topo)!r})
            with open({str(record)!r}, "a") as fh:
                fh.write(net.name + "\\n")
            return net

        @pytest.mark.testbed_root
        def test_ping(testbed):
            net = _up(testbed)
            p = net["h1"].run(["ping", "-c", "1", "-W", "2", net["h2"].ipv4], check=False)
            assert p.returncode == 0, p.stdout

        def test_fails_inside(testbed):
            _up(testbed)
            raise AssertionError("boom")
    """)
    before = set(netns.list_names())
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    names = record.read_text().split()
    assert len(names) == 2 and len(set(names)) == 2
    left = [n for n in set(netns.list_names()) - before if any(n.startswith(f"tb-{x}-") for x in names)]
    assert left == []
