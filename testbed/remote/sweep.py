"""``testbed run W.yaml --hosts hosts.yaml``: a workload's runs spread over several hosts.

Every (matrix point, repetition) becomes one remote ``testbed run`` with
``--set`` for the point's variables and ``--repeat 1``. One worker per host
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

import argparse
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError
from testbed.loader import parse_yaml
from testbed.remote.errors import ConnectionLost, RemoteError
from testbed.remote.session import RemoteOptions, Session

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


def point_argv(base: list[str], point: Any) -> list[str]:
    """The remote run argv for one point: the base without --repeat, plus --set and --repeat 1."""
    out: list[str] = []
    skip = False
    for tok in base:
        if skip:
            skip = False
        elif tok == "--repeat":
            skip = True
        elif not tok.startswith("--repeat="):
            out.append(tok)
    for key, value in point.point.items():
        out += ["--set", f"{key}={value}"]
    return out + ["--repeat", "1"]


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


def _worker(spec: str, opts: RemoteOptions, board: _Board, base: list[str], args: argparse.Namespace,
            name: str, topologies: list[Path], output: Path) -> None:
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
            point, attempt = job
            try:
                outcome = session.run_workload(
                    point_argv(base, point), workload_file=args.workload,
                    topology_files=topologies, workload_name=name, output=output,
                    instance=f"r{secrets.token_hex(3)}", attached=bool(args.testbed_name))
            except RemoteError as exc:
                with board.lock:
                    board.in_flight -= 1
                    if attempt + 1 < MAX_ATTEMPTS:
                        board.queue.append((point, attempt + 1))
                        board.notes.append(f"{spec}: {point.label} retried on another host: {exc}")
                    else:
                        board.failed.append(f"{point.label}: {exc}")
                if isinstance(exc, ConnectionLost) or not session.conn or not session.conn.alive:
                    return
                continue
            with board.lock:
                board.in_flight -= 1
                board.dirs += outcome.run_dirs
                if outcome.returncode != 0:
                    board.failed.append(f"{point.label} on {spec}: exit {outcome.returncode}")
    finally:
        session.close()


def run_sweep(args: argparse.Namespace, rest: list[str], opts: RemoteOptions) -> int:
    from testbed.cli_remote import run_argv, workload_files
    assert opts.hosts_file is not None
    specs = load_hosts(opts.hosts_file)
    name, topologies, points = workload_files(args)
    output = args.output or Path("results")
    base = run_argv(rest, args.workload)
    board = _Board(queue=[(p, 0) for p in points])
    threads = [threading.Thread(target=_worker, name=f"host {s}", daemon=True,
                                args=(s, opts, board, base, args, name, topologies, output))
               for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    import sys
    for note in board.notes:
        print(f"testbed: {note}", file=sys.stderr)
    for d in sorted(board.dirs):
        print(d)
    left = [p.label for p, _ in board.queue]
    if left:
        raise RemoteError(f"{len(left)} of {len(points)} runs were not run (no usable host left): "
                          f"{', '.join(left)}; results so far in {output / name}")
    if board.failed:
        raise RemoteError(f"{len(board.failed)} of {len(points)} runs failed: "
                          + "; ".join(board.failed))
    return 0
