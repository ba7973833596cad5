"""Starting, supervising and stopping delay daemons (``delayd``).

A daemon is started inside the link's namespace as a detached child
(``python -m testbed.emulation.delayd``) with its own session, so it
outlives the ``testbed up`` process. Its config, status and log files live
in the caller's state directory; its pid and start time (field 22 of
/proc/<pid>/stat) are returned for the state file, so a recycled pid is
never mistaken for it. Stopping signals exactly that pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.emulation import nfqueue
from testbed.kernel.netns import enter, inode, processes_in
from testbed.emulation.delayline import DelayConfig
from testbed.errors import RealizeError
from testbed.files import write_atomic

START_TIMEOUT = 20.0   # a Python start-up on a saturated 2-core machine took over 5 s
STOP_TIMEOUT = 3.0
MODULE = "testbed.emulation.delayd"


@dataclass(frozen=True)
class DaemonFiles:
    config: Path
    status: Path
    log: Path

    @classmethod
    def under(cls, directory: Path, ifname: str) -> "DaemonFiles":
        return cls(directory / f"{ifname}.delayd.json", directory / f"{ifname}.delayd.status",
                   directory / f"{ifname}.delayd.log")


@dataclass(frozen=True)
class DaemonHandle:
    pid: int
    start_time: int
    queue: int


def start_time_of(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _write_config(files: DaemonFiles, generation: int, config: DelayConfig) -> None:
    write_atomic(files.config, json.dumps({"generation": generation, "delay": config.to_dict()}))


def _read_status(files: DaemonFiles) -> dict | None:
    try:
        return json.loads(files.status.read_text())
    except (OSError, ValueError):
        return None


def _log_tail(files: DaemonFiles) -> str:
    try:
        return files.log.read_text()[-800:].strip()
    except OSError:
        return ""


def _wait_status(files: DaemonFiles, pid: int, generation: int, config: DelayConfig,
                 proc: subprocess.Popen | None) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        status = _read_status(files)
        if status and status.get("pid") == pid and status.get("generation") == generation:
            if status.get("config") != config.to_dict():
                raise RealizeError(f"delay daemon {pid} reports config {status.get('config')}, "
                                   f"planned {config.to_dict()}")
            return status
        if proc is not None and proc.poll() is not None:
            raise RealizeError(f"delay daemon exited with {proc.returncode} before binding "
                               f"its queue: {_log_tail(files)}")
        if proc is None and start_time_of(pid) is None:
            raise RealizeError(f"delay daemon {pid} died: {_log_tail(files)}")
        time.sleep(0.01)
    raise RealizeError(f"delay daemon {pid} did not confirm generation {generation} within "
                       f"{START_TIMEOUT:g}s; see {files.log}")


def start(netns: str, ifname: str, queue: int, config: DelayConfig, *, owner_tag: str,
          directory: Path, realtime_prio: int = 10, seed: int | None = None) -> DaemonHandle:
    """Start a daemon for ``queue`` in ``netns`` and wait until it has bound the queue."""
    directory.mkdir(parents=True, exist_ok=True)
    files = DaemonFiles.under(directory, ifname)
    files.status.unlink(missing_ok=True)
    _write_config(files, 1, config)
    # -P and cwd "/": a module in the caller's directory must not be imported as root
    argv = [sys.executable, "-P", "-m", MODULE, "--queue", str(queue), "--config", str(files.config),
            "--status", str(files.status), "--realtime", str(realtime_prio),
            "--owner", owner_tag, "--ifname", ifname]
    if seed is not None:
        argv += ["--seed", str(seed)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(files.log, "ab") as log, enter(netns):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, env=env, cwd="/")
    try:
        _wait_status(files, proc.pid, 1, config, proc)
        started = start_time_of(proc.pid)
        if started is None:
            raise RealizeError(f"delay daemon {proc.pid} died after starting: {_log_tail(files)}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    return DaemonHandle(pid=proc.pid, start_time=started, queue=queue)


def reconfigure(handle: DaemonHandle, config: DelayConfig, generation: int, *,
                directory: Path, ifname: str) -> None:
    """Hand a running daemon a new config (SIGHUP) and wait for it to confirm."""
    files = DaemonFiles.under(directory, ifname)
    _write_config(files, generation, config)
    if start_time_of(handle.pid) != handle.start_time:
        raise RealizeError(f"delay daemon {handle.pid} for {ifname} is not running; "
                           "run `testbed down` and `up` again")
    os.kill(handle.pid, signal.SIGHUP)
    _wait_status(files, handle.pid, generation, config, None)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(handle: DaemonHandle) -> None:
    """SIGTERM exactly this daemon (pid + start time), SIGKILL after a grace period."""
    if start_time_of(handle.pid) != handle.start_time:
        _reap(handle.pid)
        return
    os.kill(handle.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        _reap(handle.pid)
        if start_time_of(handle.pid) != handle.start_time:
            return
        time.sleep(0.01)
    os.kill(handle.pid, signal.SIGKILL)
    time.sleep(0.05)
    _reap(handle.pid)


def queue_status(netns: str, handle: DaemonHandle) -> nfqueue.QueueStatus | None:
    """The kernel's view of the daemon's queue (read through the daemon's /proc entry)."""
    try:
        text = Path(f"/proc/{handle.pid}/net/netfilter/nfnetlink_queue").read_text()
    except OSError:
        return None
    return nfqueue.parse_proc(text).get(handle.queue)


def check_alive(netns: str, ifname: str, handle: DaemonHandle) -> None:
    """Raise RealizeError unless the daemon runs, in ``netns``, with its queue bound."""
    if start_time_of(handle.pid) != handle.start_time:
        _reap(handle.pid)
        raise RealizeError(f"the delay daemon of {netns}/{ifname} (pid {handle.pid}) has died: "
                           "packets on this link are being dropped, not delayed; "
                           "re-apply the link or run `testbed down`")
    try:
        same_ns = os.stat(f"/proc/{handle.pid}/ns/net").st_ino == inode(netns)
    except OSError:
        same_ns = False
    if not same_ns:
        raise RealizeError(f"pid {handle.pid} is not in namespace {netns}; the delay daemon "
                           f"of {ifname} is gone")
    status = queue_status(netns, handle)
    if status is None:
        raise RealizeError(f"NFQUEUE {handle.queue} in {netns} has no listener; the delay "
                           f"daemon of {ifname} is not bound")


def find_daemons(netns: str, owner_tag: str, ifname: str | None = None) -> list[int]:
    """Pids of our delay daemons in ``netns`` (matched by namespace and exact argv)."""
    found = []
    for pid in processes_in([netns]):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if MODULE not in args:
            continue
        if _arg(args, "--owner") != owner_tag:
            continue
        if ifname is not None and _arg(args, "--ifname") != ifname:
            continue
        found.append(pid)
    return found


def _arg(args: list[str], flag: str) -> str | None:
    try:
        return args[args.index(flag) + 1]
    except (ValueError, IndexError):
        return None
