"""What a testbed instance made, on disk: the state directory and its journal.

``/run/testbed/<instance>/`` holds
- ``journal``: one line per object, appended *before* the object is made,
  so that a ``kill -9`` at any point leaves a record ``clean`` can act on;
- ``state.json``: the running testbed (``testbed.plan.deployed.Deployed``),
  written once ``up`` has finished and after every link change;
- ``hosts``: the /etc/hosts that commands run in the nodes see;
- ``procs``: processes started in the nodes (pid and start time).
``/run/testbed/host.json`` records changes made to the host outside any
namespace (today: ``tcp_allowed_congestion_control``), with the instances
that rely on each, so the last one down restores it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from testbed.errors import ConfigError, TestbedError
from testbed.files import contained, write_atomic
from testbed.kernel import tracefs
from testbed.model.topology import check_instance_name
from testbed.plan.deployed import Deployed

# absolute: children started with cwd "/" are handed paths under it
RUN_DIR = Path(os.environ.get("TESTBED_RUN_DIR", "/run/testbed")).absolute()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed).

    The last holder may delete the file (``tidy``); a waiter that then gets
    the lock on the deleted file notices (another inode is, or nothing is,
    at ``path``) and locks afresh, so two holders never coexist.
    """
    while True:
        try:
            _mkdir(path.parent)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the directory was tidied away in between
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def _mkdir(path: Path) -> None:
    """``mkdir -p`` that holds while ``tidy`` removes RUN_DIR under it: Path.mkdir's
    steps (make the parent, then the child; on "exists", check it is a directory) can
    each find RUN_DIR gone, and are simply tried again."""
    for _ in range(100):
        try:
            path.mkdir(parents=True, exist_ok=True)
            return
        except (FileNotFoundError, FileExistsError):
            continue
    path.mkdir(parents=True, exist_ok=True)


def instance_dir(instance: str) -> Path:
    """``RUN_DIR/<instance>``; a ConfigError, before any file is touched, for a name
    that breaks the instance-name rule (``..``, ``/some/dir``, ``host.json``, ...)."""
    return contained(RUN_DIR, check_instance_name(instance), what="instance name")


def instances() -> list[str]:
    """Instances with a state directory (entries that are not instance names are not ours)."""
    try:
        return sorted(p.name for p in RUN_DIR.iterdir() if p.is_dir() and _is_instance(p.name))
    except FileNotFoundError:
        return []


def _is_instance(name: str) -> bool:
    try:
        check_instance_name(name)
    except ConfigError:
        return False
    return True


def pick_instance(name: str | None) -> str:
    """``name`` (checked), or the only instance up; an error naming them when ambiguous."""
    if name is not None:
        return check_instance_name(name)
    up = instances()
    if len(up) == 1:
        return up[0]
    if not up:
        raise TestbedError("no testbed is up (start one with: testbed up TOPOLOGY)")
    raise TestbedError(f"several testbeds are up ({', '.join(up)}): choose one with --name")


def record_in(directory: Path, kind: str, *fields: object) -> None:
    """Append one line to the journal in ``directory`` (an instance's, or a scratch
    state directory's): for what is made below the realizer, e.g. the link engine."""
    line = " ".join([kind, *(str(f) for f in fields)]) + "\n"
    fd = os.open(Path(directory) / "journal",
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@dataclass
class Journal:
    """Append-only record of what an instance made, flushed line by line."""

    instance: str

    @property
    def dir(self) -> Path:
        return instance_dir(self.instance)

    @property
    def path(self) -> Path:
        return self.dir / "journal"

    def open(self) -> None:
        _mkdir(self.dir)

    def record(self, kind: str, *fields: object) -> None:
        record_in(self.dir, kind, *fields)

    def entries(self, kind: str) -> list[list[str]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [line.split()[1:] for line in text.splitlines() if line.split()[:1] == [kind]]

    def namespaces(self) -> list[str]:
        return [e[0] for e in self.entries("netns") if e]

    def processes(self) -> list[tuple[int, float]]:
        out = []
        for entry in self.entries("proc"):
            with contextlib.suppress(ValueError, IndexError):
                out.append((int(entry[0]), float(entry[1])))
        return out

    def write_state(self, state: dict[str, Any]) -> None:
        """Replace state.json whole (readers never see half of it). A writer that read
        it first, to change it, holds ``changing()`` around both."""
        write_atomic(self.dir / "state.json", json.dumps(state, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Exclusive right to read-modify-write state.json (``link set`` while a schedule
        changes links): an flock on the instance directory itself, so that nothing is
        created there, and an instance that is not up is an error, not a new directory."""
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TestbedError(f"no testbed named {self.instance!r} is up") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def read_deployed(self) -> Deployed | None:
        """The running testbed state.json describes; None before ``up`` has written it.
        A state.json this version cannot read is a TestbedError naming it."""
        data = self.read_state()
        return None if data is None else Deployed.from_dict(data, file=str(self.state_file))

    def write_deployed(self, deployed: Deployed) -> None:
        self.write_state(deployed.to_dict())

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


HOST_FILE = "host.json"
HOST_LOCK = ".host.lock"


def _read_host() -> dict[str, Any]:
    try:
        return json.loads((RUN_DIR / HOST_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_host(data: dict[str, Any]) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if not data:
        with contextlib.suppress(FileNotFoundError):
            (RUN_DIR / HOST_FILE).unlink()
        return
    write_atomic(RUN_DIR / HOST_FILE, json.dumps(data, indent=1, sort_keys=True))


ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


def allow_congestion_controls(instance: str, wanted: list[str]) -> list[str]:
    """Make ``wanted`` allowed in the initial namespace; record it. Returns what was added."""
    with locked(RUN_DIR / HOST_LOCK):
        data = _read_host()
        entry = data.get("tcp_allowed_congestion_control")
        current = ALLOWED_CC.read_text().split()
        missing = [cc for cc in wanted if cc not in current]
        if entry is None and not missing:
            return []
        if entry is None:
            entry = {"original": current, "added": [], "users": []}
        for cc in missing:
            if cc not in entry["added"] and cc not in entry["original"]:
                entry["added"].append(cc)
        if instance not in entry["users"]:
            entry["users"].append(instance)
        data["tcp_allowed_congestion_control"] = entry
        # record first, then change: a kill -9 in between leaves a restorable record
        _write_host(data)
        if missing:
            ALLOWED_CC.write_text(" ".join(current + missing))
        return missing


def mount_tracefs(instance: str) -> bool:
    """Mount tracefs for ``instance``'s runs' tcp events if it is not mounted; record it
    first (host.json ``tracefs``), so that the last ``down``/``clean`` unmounts it again.
    False when it was mounted already (by someone else: nothing to restore)."""
    with locked(RUN_DIR / HOST_LOCK):
        data = _read_host()
        entry = data.get("tracefs")
        if entry is None and tracefs.mount_point() is not None:
            return False
        entry = entry or {"mounted": str(tracefs.DEFAULT_MOUNT), "users": []}
        if instance not in entry["users"]:
            entry["users"].append(instance)
        data["tracefs"] = entry
        _write_host(data)       # record first, then change
        if tracefs.mount_point() is None:
            tracefs.mount(Path(entry["mounted"]))
        return True


def _release_allowed_cc(data: dict[str, Any], instance: str, live: set[str]) -> list[str]:
    entry = data.get("tcp_allowed_congestion_control")
    if entry is None:
        return []
    entry["users"] = [u for u in entry["users"] if u != instance and u in live]
    if entry["users"]:
        return []
    current = ALLOWED_CC.read_text().split()
    # remove only what we added; keep anything someone else added meanwhile
    kept = [cc for cc in current if cc not in entry["added"] or cc in entry["original"]]
    if kept != current:
        ALLOWED_CC.write_text(" ".join(kept))
    del data["tcp_allowed_congestion_control"]
    return [cc for cc in current if cc not in kept]


def release_tracefs(instance: str) -> str | None:
    """Drop ``instance`` as a user of the tracefs mount testbed made; unmount it when no
    instance uses it any more. The mount point unmounted, if it was."""
    with locked(RUN_DIR / HOST_LOCK):
        data = _read_host()
        entry = data.get("tracefs")
        if entry is None:
            return None
        live = set(instances())
        entry["users"] = [u for u in entry["users"] if u != instance and u in live]
        if entry["users"]:
            _write_host(data)
            return None
        mounted = Path(entry["mounted"])
        if tracefs.mount_point() == mounted:
            tracefs.unmount(mounted)
        del data["tracefs"]
        _write_host(data)
        return str(mounted)


def release_host_changes(instance: str) -> list[str]:
    """Drop ``instance`` as a user of host changes; restore those no one uses any more."""
    with locked(RUN_DIR / HOST_LOCK):
        data = _read_host()
        if "tcp_allowed_congestion_control" not in data:
            return []
        restored = _release_allowed_cc(data, instance, set(instances()))
        _write_host(data)
    return restored


def host_changes() -> dict[str, Any]:
    return _read_host()


def tidy() -> None:
    """Remove the lock file and RUN_DIR itself once no instance and no host change is left."""
    if not RUN_DIR.exists():
        return
    with locked(RUN_DIR / HOST_LOCK):
        if instances() or _read_host():
            return
        with contextlib.suppress(FileNotFoundError):
            (RUN_DIR / HOST_LOCK).unlink()  # still held: waiters re-check and lock afresh
        with contextlib.suppress(OSError):  # not empty: someone else's file; leave it
            RUN_DIR.rmdir()
