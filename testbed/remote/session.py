"""One testbed command on one remote host.

``Session`` connects (host key checked), finds or installs the remote
testbed, runs ``testbed doctor`` there (shown) before anything that builds
namespaces, ships the files a command names (a topology; a workload and
every topology it references, relative layout kept), runs the command as
root (``sudo -n`` when the user is not root) under the wrapper that ends it
if the connection drops, streams its output, and pulls run directories
home. Each run directory brought home gets a ``remote.json`` saying where
it ran.

If the connection drops during ``run``: reconnect, wait for the remote
testbed to finish its teardown, ``testbed down --name`` the instance to be
sure, pull whatever was written (marked ``connection_lost``). If the host
stays away, a local run directory with status ``interrupted`` records what
was streamed and what to clean up by hand.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from testbed.output import write_quietly
from testbed.remote.errors import (ConnectionLost, RemoteCommandFailed, RemoteError,
                                   RemoteUnfit)
from testbed.remote.install import ensure_testbed
from testbed.remote.ssh import Connection, Target, resolve
from testbed.results import SCHEMA_VERSION, make_run_dir, write_json

RECONNECT_ATTEMPTS = 3
RECONNECT_PAUSE = 2.0
TEARDOWN_WAIT = 60.0
WORKLOAD_SLOT = "\0workload"


@dataclass
class RemoteOptions:
    """How to reach hosts and which testbed to run there (the --host family of options)."""

    host: str | None = None
    hosts_file: str | None = None
    trust_new_host_key: bool = False
    remote_testbed: str | None = None
    remote_dir: str | None = None
    remote_python: str = "python3"
    known_hosts: str | None = None
    identity: str | None = None
    ssh_config: str | None = None
    connect_timeout: float = 10.0


@dataclass
class RunOutcome:
    """What a remote ``run`` brought home."""

    returncode: int
    run_dirs: list[Path] = field(default_factory=list)
    lost: bool = False


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Session:
    """A connection to one host plus what testbed needs there."""

    def __init__(self, spec: str, options: RemoteOptions, *, prefix: str = "",
                 log: Callable[[str], None] = _stderr) -> None:
        self.spec = spec
        self.options = options
        self.prefix = prefix
        self.log = log
        self.target: Target = resolve(spec, ssh_config=options.ssh_config,
                                      known_hosts=options.known_hosts, identity=options.identity)
        self.conn: Connection | None = None
        self.testbed = ""
        self.remote_dir = ""
        self.doctor_ok = False

    # ---- connection -----------------------------------------------------
    def connect(self) -> Connection:
        self.conn = Connection.open(self.target, trust_new=self.options.trust_new_host_key,
                                    timeout=self.options.connect_timeout)
        for note in self.conn.notes:
            self.log(f"{self.prefix}testbed: {note}")
        self.remote_dir = self.options.remote_dir or f"{self.conn.home()}/.cache/testbed"
        return self.conn

    def prepare(self) -> None:
        """Connect and find (or install) the remote testbed."""
        if self.conn is None or not self.conn.alive:
            self.connect()
        assert self.conn is not None
        if not self.testbed:
            self.testbed = ensure_testbed(self.conn, self.remote_dir,
                                          explicit=self.options.remote_testbed,
                                          python=self.options.remote_python,
                                          log=lambda m: self.log(self.prefix + m))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _stream(self, sink: Any) -> Callable[[bytes], None]:
        """A writer that prefixes each line (for several hosts at once). A local reader
        that goes away (``| head``) silences it; the remote command carries on."""
        if not self.prefix:
            def plain(data: bytes) -> None:
                write_quietly(sink, data)
            return plain
        pending = bytearray()

        def prefixed(data: bytes) -> None:
            pending.extend(data)
            while b"\n" in pending:
                line, _, rest = bytes(pending).partition(b"\n")
                write_quietly(sink, self.prefix.encode() + line + b"\n")
                pending[:] = rest
        return prefixed

    def command(self, argv: list[str], *, root: bool = True, out: Callable[[bytes], None] | None = None,
                err: Callable[[bytes], None] | None = None, pidfile: str = "",
                stop: threading.Event | None = None) -> int:
        """Run ``testbed ARGV`` remotely, streaming; return its exit code."""
        self.prepare()
        assert self.conn is not None
        return self.conn.run([self.testbed, *argv], root=root, python=self.options.remote_python,
                             out=out or self._stream(sys.stdout),
                             err=err or self._stream(sys.stderr), pidfile=pidfile, stop=stop)

    def doctor(self, *, to_stdout: bool = False) -> int:
        """``testbed doctor`` on the remote, output shown; RemoteUnfit when it fails."""
        self.log(f"{self.prefix}testbed: checking {self.target.label} (testbed doctor there):")
        sink = sys.stdout if to_stdout else sys.stderr
        rc = self.command(["doctor"], out=self._stream(sink))
        if rc != 0:
            raise RemoteUnfit(f"{self.target.label} lacks what testbed needs (its doctor report "
                              "is above): fix that there, or pick another host")
        self.doctor_ok = True
        return rc

    # ---- files ----------------------------------------------------------
    def ship(self, files: list[Path], session_dir: str) -> dict[Path, str]:
        """Copy ``files`` under ``session_dir/files`` keeping their relative layout."""
        assert self.conn is not None
        resolved = [f.resolve() for f in files]
        base = Path(os.path.commonpath([f.parent for f in resolved]))
        mapping: dict[Path, str] = {}
        for f in resolved:
            dest = f"{session_dir}/files/{f.relative_to(base).as_posix()}"
            self.conn.put(f, dest)
            mapping[f] = dest
        return mapping

    def remove_remote(self, path: str) -> None:
        """Delete a remote directory testbed made (as root: its results are root's)."""
        assert self.conn is not None
        argv = [self.options.remote_python, "-I", "-c",
                "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)", path]
        self.conn.simple(self.conn.privileged(argv))

    def new_session_dir(self) -> str:
        return f"{self.remote_dir}/sessions/{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"

    # ---- run --------------------------------------------------------------
    def run_workload(self, run_argv: list[str], *, workload_file: Path, topology_files: list[Path],
                     workload_name: str, output: Path, instance: str,
                     attached: bool = False) -> RunOutcome:
        """``testbed run`` remotely. ``run_argv`` is the argv from ``run`` on, with
        ``WORKLOAD_SLOT`` where the workload path goes and without --output/--name."""
        self.prepare()
        assert self.conn is not None
        session_dir = self.new_session_dir()
        mapping = self.ship([workload_file, *topology_files], session_dir)
        remote_wl = mapping[workload_file.resolve()]
        argv = [remote_wl if a == WORKLOAD_SLOT else a for a in run_argv]
        results = f"{session_dir}/results"
        argv = [*argv, "--output", results]
        if not attached:
            argv += ["--name", instance]
        log = bytearray()

        def tee(sink: Callable[[bytes], None]) -> Callable[[bytes], None]:
            def write(data: bytes) -> None:
                log.extend(data)
                sink(data)
            return write
        stdout_lines = bytearray()
        pidfile = f"{session_dir}/wrapper.pid"
        meta = {"host": self.target.label, "hostname": self.target.hostname,
                "user": self.target.user, "session_dir": session_dir, "instance": instance,
                "remote_testbed": self.testbed, "connection_lost": False}
        try:
            rc = self.command(argv, out=stdout_lines.extend, err=tee(self._stream(sys.stderr)),
                              pidfile=pidfile)
            dirs = self._pull(results, output, meta)
        except ConnectionLost as lost:
            meta["connection_lost"] = True
            return self._after_loss(lost, session_dir, results, output, meta, workload_name,
                                    bytes(log), attached)
        if dirs:
            self.remove_remote(session_dir)
        else:
            self.log(f"{self.prefix}testbed: no run directory came back; remote files kept in "
                     f"{self.target.label}:{session_dir}")
        return RunOutcome(rc, dirs)

    def _pull(self, results: str, output: Path, meta: dict[str, Any]) -> list[Path]:
        assert self.conn is not None
        dirs: list[Path] = []
        if not self.conn.exists(results):
            return dirs
        for wl in self.conn.listdir(results):
            wl_dir = self.conn.local_path(output, wl, results)
            for run_id in self.conn.listdir(f"{results}/{wl}"):
                local = self.conn.local_path(wl_dir, run_id, f"{results}/{wl}")
                self.conn.get_tree(f"{results}/{wl}/{run_id}", local)
                (local / "remote.json").write_text(json.dumps(meta, indent=1) + "\n")
                dirs.append(local)
        return dirs

    def _after_loss(self, lost: ConnectionLost, session_dir: str, results: str, output: Path,
                    meta: dict[str, Any], workload_name: str, log: bytes,
                    attached: bool) -> RunOutcome:
        self.log(f"{self.prefix}testbed: {lost}; reconnecting to stop and clean up")
        self.close()
        last: RemoteError = lost
        for attempt in range(RECONNECT_ATTEMPTS):
            time.sleep(RECONNECT_PAUSE)
            try:
                self.connect()
                break
            except RemoteError as exc:
                last = exc
        else:
            record = _lost_record(output, workload_name, meta, log, lost, last)
            raise ConnectionLost(
                f"{lost}; could not reconnect ({last}). The remote run ends itself once its "
                f"sshd notices; partial record in {record}. When the host is back: testbed "
                f"--host {self.target.label} down --name {meta['instance']}") from None
        assert self.conn is not None
        deadline = time.monotonic() + TEARDOWN_WAIT
        while self.conn.exists(f"{session_dir}/wrapper.pid") and time.monotonic() < deadline:
            time.sleep(0.5)
        if not attached:
            self.command(["down", "--name", meta["instance"]], out=self._stream(sys.stderr))
        dirs = self._pull(results, output, meta)
        if dirs:
            self.remove_remote(session_dir)
        raise ConnectionLost(f"{lost}; reconnected, the remote run was stopped and torn down; "
                             f"partial results in {', '.join(map(str, dirs)) or '(none written)'}")


def _lost_record(output: Path, workload_name: str, meta: dict[str, Any], log: bytes,
                 lost: RemoteError, last: RemoteError) -> Path:
    """A local run directory marking a run whose host went away."""
    run_dir = make_run_dir(workload_name, output)
    (run_dir / "remote.log").write_bytes(log)
    (run_dir / "remote.json").write_text(json.dumps(meta, indent=1) + "\n")
    write_json(run_dir / "result.json", {
        "schema_version": SCHEMA_VERSION, "workload": workload_name, "run_id": run_dir.name,
        "status": "interrupted", "partial": True,
        "error": f"{lost}; could not reconnect: {last}", "suspect": True,
        "suspect_reasons": ["the remote host went away mid-run; its results stayed there"],
        "flows": [], "summary": {}, "remote": meta,
    })
    return run_dir


def run_remote_raise(rc: int, what: str) -> None:
    if rc != 0:
        raise RemoteCommandFailed(f"remote {what} failed (exit {rc}; its message is above)", rc)
