"""A ``testbed run`` carried out on other hosts: what it needs from this side.

``RemoteRun`` is the run as the local command line asked for it: the
workload file and the topology files its points use (both shipped to the
host), its points (the queue ``--hosts`` spreads), the argv for the
remote, where results land here and which instance name to use there.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from testbed.remote.argv import run_argv
from testbed.remote.session import RunOutcome, Session
from testbed.workload import RunPoint, load_source, load_workload
from testbed.workload.matrix import load_matrix
from testbed.workload.sharding import Selection, worker_points


@dataclass(frozen=True)
class RemoteRun:
    """One ``testbed run W.yaml ...`` for ``--host``/``--hosts``."""

    workload: Path
    name: str                 # the workload's name (results go to output/name)
    topologies: list[Path]    # topology files its points reference
    points: list[RunPoint]
    argv: list[str]           # for the remote: WORKLOAD_SLOT, no --output/--name
    output: Path
    instance: str | None      # --name; None: a fresh name per remote run
    attached: bool            # --testbed: the remote's testbed is already up


def remote_run(rest: list[str], workload: Path, *, variables: Mapping[str, Any],
               repeat: int | None, output: Path | None, instance: str | None,
               attached: bool, selection: Selection | None = None) -> RemoteRun:
    """Load the workload here (errors before connecting) and describe the run: the runs
    ``selection`` picks (a sweep worker's options, as ``testbed run`` reads them)."""
    source = load_source(workload)
    matrix = load_matrix(workload, dict(variables), repeat)
    points = worker_points(matrix, selection or Selection(), os.environ)
    loaded = [load_workload(workload, p.variables, source=source) for p in points]
    topologies = sorted({wl.topology_path for wl in loaded if wl.topology_path is not None})
    return RemoteRun(workload=workload, name=loaded[0].name, topologies=topologies,
                     points=points, argv=run_argv(rest, workload),
                     output=output or Path("results"), instance=instance, attached=attached)


def run_on(session: Session, run: RemoteRun, argv: list[str] | None = None) -> RunOutcome:
    """Carry out ``run`` (or ``argv``, one of its points) on ``session``'s host."""
    return session.run_workload(argv or run.argv, workload_file=run.workload,
                                topology_files=run.topologies, workload_name=run.name,
                                output=run.output,
                                instance=run.instance or f"r{secrets.token_hex(3)}",
                                attached=run.attached)
