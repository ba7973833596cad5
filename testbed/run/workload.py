"""Running a workload: expand its matrix, pick this worker's points (all of
them, or those ``--point``/``--index``/``--shard``/``--point-from-env`` name), check them all (``preflight``) before
anything starts, then run each point (``runner.PointRun``) in turn. SIGINT,
SIGTERM and SIGHUP become ``Interrupted`` for the whole sweep; the first
failing point stops it (its directory kept and marked) so that a sweep does
not carry on over a broken setup."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from testbed.run.preflight import preflight
from testbed.run.progress import ProgressLine
from testbed.run.runner import PointRun, interrupted
from testbed.signals import stop_signals_raise
from testbed.workload import load_source, load_workload
from testbed.workload.matrix import load_matrix
from testbed.workload.sharding import Selection, worker_points


def run_workload(path: str | os.PathLike[str], *, variables: dict[str, Any] | None = None,
                 repeat: int | None = None, output: str | os.PathLike[str] | None = None,
                 testbed_name: str | None = None, progress: bool = True, name: str | None = None,
                 link_backend: str = "auto", command: list[str] | None = None,
                 allow_mismatch: bool = False, selection: Selection | None = None) -> list[Path]:
    """Run every point of a workload (or those ``selection`` picks, with the environment
    for ``--point-from-env``); return the run directories written.

    Raises after the failing run (its directory kept and marked).
    """
    matrix = load_matrix(path, variables, repeat)
    points = worker_points(matrix, selection or Selection(), os.environ)
    source = load_source(path)
    workloads = [load_workload(path, p.variables, source=source) for p in points]
    prepared = preflight(workloads, testbed_name=testbed_name, instance_name=name,
                         allow_mismatch=allow_mismatch, link_backend=link_backend)
    out = Path(output) if output is not None else None
    dirs: list[Path] = []
    line = ProgressLine(progress, [wl.planned_seconds for wl in workloads])
    with stop_signals_raise(interrupted, once=True):
        for i, (point, wl, prep) in enumerate(zip(points, workloads, prepared)):
            line.begin_point(i, f"{wl.name} {point.label}")
            run = PointRun(wl, point, prep, matrix, output=out, testbed_name=testbed_name,
                           instance_name=name, link_backend=link_backend,
                           command=command if command is not None else list(sys.argv), line=line)
            try:
                dirs.append(run.execute())
            finally:
                line.end_point()
                if run.run_dir is not None and run.run_dir not in dirs:
                    dirs.append(run.run_dir)
            line.message(f"result: {run.run_dir}")
    return dirs
