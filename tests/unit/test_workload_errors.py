"""A corpus of broken workloads, each with the message and YAML path it must produce."""

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.workload import expand_points, load_source, load_workload

CORPUS = sorted((Path(__file__).parent / "broken_workloads").glob("*.yaml"))


def _expectations(path: Path) -> tuple[str, str]:
    lines = path.read_text().splitlines()
    return lines[0].removeprefix("# expect: "), lines[1].removeprefix("# path:").strip()


def _load_every_point(path: Path) -> None:
    source = load_source(path)
    for point in expand_points(source):
        load_workload(path, point.variables, source=source)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_broken_workload_is_rejected_with_file_and_path(path):
    expect, where = _expectations(path)
    with pytest.raises(ConfigError) as info:
        _load_every_point(path)
    err = info.value
    assert expect in err.message
    assert err.file == str(path)
    assert (err.path or "") == where
