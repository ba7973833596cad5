"""pytest plugin (entry point ``pytest11``): network testbeds in your own tests.

    import pytest

    @pytest.mark.testbed_root
    def test_app_survives_loss(testbed):
        net = testbed.up("topo.yaml", variables={"loss": "1%"})
        assert net["h1"].run(["ping", "-c", "3", "h2"]).returncode == 0

- fixture ``testbed``: ``up(...)`` brings a topology up under a unique
  instance name and always takes it down after the test (pass or fail);
  ``run(workload, ...)`` runs a workload into the test's tmp_path and
  ``compare(paths, ...)`` / ``check(paths, *assertions)`` summarise it.
- marker ``testbed_root``: the test needs root; without it the test is
  skipped with that reason instead of failing. ``testbed.up`` skips the same
  way when not root, so the marker is optional but says it up front.

Named so as not to clash with a project's own ``root`` marker.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pytest

MARKER = "testbed_root"
SKIP_REASON = "needs root: testbed builds real network namespaces (run pytest as root)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: needs root to build network namespaces; "
                            "skipped with the reason when not root")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER) is not None and os.geteuid() != 0:
        pytest.skip(SKIP_REASON)


class TestbedFixture:
    """What the ``testbed`` fixture gives a test. Everything it brings up comes down."""

    __test__ = False  # not a test class

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.tmp_path = tmp_path
        self._prefix = prefix
        self._count = itertools.count()
        self._nets: list[Any] = []
        self._names: list[str] = []

    def _name(self) -> str:
        name = f"{self._prefix}{next(self._count)}"
        self._names.append(name)
        return name

    @staticmethod
    def _need_root() -> None:
        if os.geteuid() != 0:
            pytest.skip(SKIP_REASON)

    def up(self, topology: str | os.PathLike[str], *, variables: Mapping[str, Any] | None = None,
           link_backend: str = "auto", name: str | None = None) -> Any:
        """Bring ``topology`` up (unique instance name unless given); torn down after the test."""
        self._need_root()
        import testbed  # here, not at the top: the fixture below is named testbed as well
        net = testbed.up(topology, name=name or self._name(), variables=variables,
                         link_backend=link_backend)
        self._nets.append(net)
        return net

    def run(self, workload: str | os.PathLike[str], *, variables: Mapping[str, Any] | None = None,
            repeat: int | None = None, link_backend: str = "auto",
            output: str | os.PathLike[str] | None = None) -> list[Path]:
        """Run a workload (``testbed run``) into tmp_path; returns the run directories."""
        self._need_root()
        # every pytest session loads this plugin: pyroute2 (~0.3 s) only when a test runs one
        from testbed.run.workload import run_workload
        return run_workload(workload, variables=dict(variables or {}), repeat=repeat,
                            output=output if output is not None else self.tmp_path / "results",
                            progress=False, name=self._name(), link_backend=link_backend,
                            command=["pytest", str(workload)])

    def compare(self, paths: Sequence[str | os.PathLike[str]], *, by: Sequence[str] = (),
                include_suspect: bool = True) -> Any:
        """A Summary of run directories (suspect runs included by default: tests run on busy CI)."""
        from testbed.analysis import load_runs, summarize  # ~50 ms: only when a test compares
        return summarize(load_runs(paths, include_suspect=include_suspect), by)

    def check(self, paths: Sequence[str | os.PathLike[str]], *assertions: str,
              by: Sequence[str] = (), include_suspect: bool = True) -> None:
        """Fail the test (AssertionError) unless every ``--assert``-style expression holds."""
        from testbed.analysis.verdicts import check_assertions  # see compare
        verdicts = check_assertions(self.compare(paths, by=by, include_suspect=include_suspect),
                                    assertions)
        failed = [f"{v.text}: {v.message}" for v in verdicts if not v.passed]
        assert not failed, "; ".join(failed)

    def close(self) -> None:
        """Take down everything this test brought up, newest first; report every failure."""
        errors = []
        while self._nets:
            net = self._nets.pop()
            try:
                net.down()
            except Exception as exc:  # keep going: the other testbeds must come down too
                errors.append(f"{net.name}: {exc}")
        if self._names and os.geteuid() == 0:
            import testbed  # see up
            for name in self._names:  # what a failed or killed up may have left
                try:
                    testbed.down(name)
                except Exception as exc:
                    errors.append(f"{name}: {exc}")
        if errors:
            raise RuntimeError("testbed fixture teardown failed: " + "; ".join(errors))


_counter = itertools.count()


@pytest.fixture
def testbed(tmp_path: Path) -> Iterator[TestbedFixture]:
    """Bring topologies up and run workloads; everything is torn down after the test."""
    fx = TestbedFixture(tmp_path, prefix=f"pt{os.getpid() % 100000}x{next(_counter)}n")
    try:
        yield fx
    finally:
        fx.close()
