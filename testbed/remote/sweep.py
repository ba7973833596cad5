"""``testbed run W.yaml --hosts hosts.yaml``: a workload's runs spread over several hosts.

Every (matrix point, repetition) becomes one remote ``testbed run`` with the
local ``--set``/``--repeat`` and ``--point`` its run id, so that each remote run
records the sweep's matrix and its point's id and seed (``testbed merge``). One worker per host
takes the next run when its host is free (one experiment per host at a
time). A run whose host drops goes back to the queue for another host (at
most ``MAX_ATTEMPTS`` times); the dropped host takes no more. Every run
directory lands in the one local ``--output`` tree, ready for ``compare``;
the partial record of a dropped attempt is kept there, marked.

hosts.yaml::

    hosts:
      - alice@lab1
      - lab2:2222
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError
from testbed.model.document import parse_yaml
from testbed.remote.argv import point_argv
from testbed.remote.errors import ConnectionLost, RemoteError
from testbed.remote.session import RemoteOptions, Session
from testbed.remote.workload import RemoteRun, run_on

MAX_ATTEMPTS = 2


def load_hosts(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read hosts file: {exc}", file=path) from None
    data, _ = parse_yaml(text, path)
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts or \
            not all(isinstance(h, str) and h.strip() for h in hosts):
        raise ConfigError("expected 'hosts:' with a list of [user@]host[:port] strings",
                          file=path, path="hosts")
    return [h.strip() for h in hosts]


@dataclass
class _Board:
    """Shared state of the workers (guarded by ``lock``)."""

    queue: list[tuple[Any, int]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    dirs: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def take(self) -> tuple[Any, int] | None:
        while True:
            with self.lock:
                if self.queue:
                    self.in_flight += 1
                    return self.queue.pop(0)
                if self.in_flight == 0:
                    return None
            time.sleep(0.2)


def _worker(spec: str, opts: RemoteOptions, board: _Board, run: RemoteRun) -> None:
    session = Session(spec, opts, prefix=f"[{spec}] ")
    try:
        session.prepare()
        session.doctor()
    except RemoteError as exc:
        with board.lock:
            board.notes.append(f"{spec}: not used: {exc}")
        session.close()
        return
    try:
        while (job := board.take()) is not None:
            if not _run_point(session, board, run, job):
                return
    finally:
        session.close()


def _run_point(session: Session, board: _Board, run: RemoteRun, job: tuple[Any, int]) -> bool:
    """Run one point on ``session``'s host; False when that host is lost."""
    point, attempt = job
    spec = session.spec
    try:
        outcome = run_on(session, run, point_argv(run.argv, point))
    except RemoteError as exc:
        with board.lock:
            board.in_flight -= 1
            if attempt + 1 < MAX_ATTEMPTS:
                board.queue.append((point, attempt + 1))
                board.notes.append(f"{spec}: {point.label} retried on another host: {exc}")
            else:
                board.failed.append(f"{point.label}: {exc}")
        return not (isinstance(exc, ConnectionLost) or not session.conn or not session.conn.alive)
    with board.lock:
        board.in_flight -= 1
        board.dirs += outcome.run_dirs
        if outcome.returncode != 0:
            board.failed.append(f"{point.label} on {spec}: exit {outcome.returncode}")
    return True


@dataclass
class Sweep:
    """What a sweep brought home, and what it could not do."""

    dirs: list[Path]
    notes: list[str]          # hosts not used, runs retried elsewhere
    not_run: list[str]        # points no usable host was left for
    failed: list[str]
    total: int
    where: Path               # output/<workload name>

    def error(self) -> RemoteError | None:
        if self.not_run:
            return RemoteError(f"{len(self.not_run)} of {self.total} runs were not run (no usable "
                               f"host left): {', '.join(self.not_run)}; results so far in "
                               f"{self.where}")
        if self.failed:
            return RemoteError(f"{len(self.failed)} of {self.total} runs failed: "
                               + "; ".join(self.failed))
        return None


def run_sweep(hosts_file: str, opts: RemoteOptions, run: RemoteRun) -> Sweep:
    """Spread ``run``'s points over the hosts of ``hosts_file``, one worker per host."""
    specs = load_hosts(hosts_file)
    board = _Board(queue=[(p, 0) for p in run.points])
    threads = [threading.Thread(target=_worker, name=f"host {s}", daemon=True,
                                args=(s, opts, board, run)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Sweep(dirs=sorted(board.dirs), notes=board.notes,
                 not_run=[p.label for p, _ in board.queue], failed=board.failed,
                 total=len(run.points), where=run.output / run.name)
