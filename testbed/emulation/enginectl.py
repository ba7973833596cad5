"""Starting, changing, supervising and stopping a testbed's link engine (``engine.py``).

There is one engine per state directory (one testbed). Its files live in
``<state_dir>/emulation/engine/``: ``engine.json`` (what it must serve),
``engine.status`` (what it confirms), ``engine.log``, ``engine.handle`` (pid
and start time, so a recycled pid is never mistaken for it) and
``engine.lock``, held while the lanes change (``up``, ``link set`` and a
schedule may change them at once).

``put_lanes`` is the one way in: it merges lane changes into
``engine.json``, starts the engine when the first lane appears (inside that
lane's namespace, so ``down`` finds it there as well as in the journal),
hands a running one the new file (SIGHUP) and waits until the status
confirms the generation with exactly the planned configs, and stops the
engine when the last lane goes. The engine's pid is journaled (``proc`` line
of ``<state_dir>/journal``) so ``down``/``clean`` end it after a kill -9 of
``up``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Mapping

from testbed.emulation import nfqueue
from testbed.emulation.delayline import DelayConfig
from testbed.emulation.engine import lane_key, query_path
from testbed.errors import RealizeError
from testbed.files import write_atomic
from testbed.kernel.netns import Namespaces, enter, processes_in
from testbed.realize import state
from testbed.realize.teardown import process_start

QUERY_REPLY_MAX = 1 << 20    # bytes of one answer of the query socket
START_TIMEOUT = 20.0   # a Python start-up on a saturated 2-core machine took over 5 s
STOP_TIMEOUT = 3.0
MODULE = "testbed.emulation.engine"


@dataclass(frozen=True)
class EngineHandle:
    pid: int
    start_time: int     # clock ticks since boot (field 22 of /proc/<pid>/stat)
    netns: str          # where it runs


@dataclass(frozen=True)
class EngineFiles:
    directory: Path

    @classmethod
    def of(cls, state_dir: str | os.PathLike) -> "EngineFiles":
        return cls(Path(state_dir) / "emulation" / "engine")

    @property
    def control(self) -> Path:
        return self.directory / "engine.json"

    @property
    def status(self) -> Path:
        return self.directory / "engine.status"

    @property
    def query(self) -> Path:
        return Path(query_path(str(self.status)))

    @property
    def log(self) -> Path:
        return self.directory / "engine.log"

    @property
    def handle(self) -> Path:
        return self.directory / "engine.handle"

    @property
    def lock(self) -> Path:
        return self.directory / "engine.lock"


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


def read_handle(files: EngineFiles) -> EngineHandle | None:
    try:
        return EngineHandle(**json.loads(files.handle.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def read_lanes(files: EngineFiles) -> tuple[int, dict[str, DelayConfig]]:
    try:
        data = json.loads(files.control.read_text())
    except FileNotFoundError:
        return 0, {}
    return int(data["generation"]), {k: DelayConfig.from_dict(v) for k, v in data["lanes"].items()}


def read_status(files: EngineFiles) -> dict | None:
    try:
        return json.loads(files.status.read_text())
    except (OSError, ValueError):
        return None


def is_running(handle: EngineHandle | None) -> bool:
    return handle is not None and start_time_of(handle.pid) == handle.start_time


@contextlib.contextmanager
def _locked(files: EngineFiles) -> Iterator[None]:
    files.directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def put_lanes(state_dir: str | os.PathLike, changes: Mapping[tuple[str, int], DelayConfig | None],
              *, owner_tag: str, realtime_prio: int = 10,
              seed: int | None = None) -> EngineHandle | None:
    """Set (a config) or remove (None) lanes ``(netns, queue)``; the engine confirms.

    Returns the engine's handle (None once no lane is left and it has stopped).
    """
    files = EngineFiles.of(state_dir)
    with _locked(files):
        generation, lanes = read_lanes(files)
        for (netns, queue), config in changes.items():
            if config is None:
                lanes.pop(lane_key(netns, queue), None)
            else:
                lanes[lane_key(netns, queue)] = config
        handle = read_handle(files)
        if not lanes:
            if handle is not None:
                stop(handle)
            files.handle.unlink(missing_ok=True)
            _write_control(files, generation + 1, {})
            return None
        _write_control(files, generation + 1, lanes)
        if handle is None:
            return _start(files, Path(state_dir), generation + 1, lanes, owner_tag,
                          realtime_prio, seed)
        if not is_running(handle):
            raise RealizeError(_dead(handle))
        try:
            _reload(files, handle, generation + 1, lanes)
        except RealizeError:
            # what the engine could not open leaves its file again; the rest stays served
            failed = set((read_status(files) or {}).get("errors") or {})
            if failed:
                kept = {k: c for k, c in lanes.items() if k not in failed}
                _write_control(files, generation + 2, kept)
                _reload(files, handle, generation + 2, kept)
            raise
        return handle


def _write_control(files: EngineFiles, generation: int, lanes: dict[str, DelayConfig]) -> None:
    write_atomic(files.control, json.dumps(
        {"generation": generation, "lanes": {k: c.to_dict() for k, c in lanes.items()}}))


def _reload(files: EngineFiles, handle: EngineHandle, generation: int,
            lanes: dict[str, DelayConfig]) -> None:
    os.kill(handle.pid, signal.SIGHUP)
    _wait_status(files, handle.pid, generation, lanes, None)


def _start(files: EngineFiles, state_dir: Path, generation: int, lanes: dict[str, DelayConfig],
           owner_tag: str, realtime_prio: int, seed: int | None) -> EngineHandle:
    """Start the engine in the first lane's namespace and wait until it serves ``lanes``."""
    files.status.unlink(missing_ok=True)
    home = next(iter(lanes)).rpartition("/")[0]
    # -P and cwd "/": a module in the caller's directory must not be imported as root
    argv = [sys.executable, "-P", "-m", MODULE, "--control", str(files.control),
            "--status", str(files.status), "--realtime", str(realtime_prio),
            "--owner", owner_tag]
    if seed is not None:
        argv += ["--seed", str(seed)]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(files.log, "ab") as log, enter(home):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, env=env, cwd="/")
    # journaled at once: down/clean end it even if this process is killed right now
    state.record_in(state_dir, "proc", proc.pid, process_start(proc.pid) or 0)
    try:
        _wait_status(files, proc.pid, generation, lanes, proc)
        started = start_time_of(proc.pid)
        if started is None:
            raise RealizeError(f"the link engine {proc.pid} died after starting: "
                               f"{_log_tail(files)}")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise
    handle = EngineHandle(pid=proc.pid, start_time=started, netns=home)
    write_atomic(files.handle, json.dumps(asdict(handle)))
    return handle


def _log_tail(files: EngineFiles) -> str:
    try:
        return files.log.read_text()[-800:].strip()
    except OSError:
        return ""


def _wait_status(files: EngineFiles, pid: int, generation: int, lanes: dict[str, DelayConfig],
                 proc: subprocess.Popen | None) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        status = read_status(files)
        if status and status.get("pid") == pid and status.get("generation") == generation:
            got = {k: v["config"] for k, v in status["lanes"].items()}
            want = {k: c.to_dict() for k, c in lanes.items()}
            failed = status.get("errors") or {}
            if failed:
                raise RealizeError("the link engine could not serve "
                                   + "; ".join(f"{k}: {why}" for k, why in failed.items()))
            if got != want:
                raise RealizeError(f"the link engine {pid} serves {sorted(got)} with other "
                                   f"configs than planned ({sorted(want)})")
            return status
        if proc is not None and proc.poll() is not None:
            raise RealizeError(f"the link engine exited with {proc.returncode} before binding "
                               f"its queues: {_log_tail(files)}")
        if proc is None and start_time_of(pid) is None:
            raise RealizeError(f"the link engine {pid} died: {_log_tail(files)}")
        time.sleep(0.002)
    raise RealizeError(f"the link engine {pid} did not confirm generation {generation} within "
                       f"{START_TIMEOUT:g}s; see {files.log}")


class QueueQueries:
    """The engine's bottleneck queues as of now, over its query socket (``engine.sock``):
    ``ask`` sends a request id, ``answer`` waits for the reply carrying it. What the run's
    qdisc sampler asks every 10-100 ms (``collect.qdisc.EngineQueues``): the engine
    answers between two packets without writing a file. Used from one thread; its own
    socket is bound on the first ``ask`` (a failure is kept in ``error``: every sample is
    then lost, and the run says why)."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.files = EngineFiles.of(state_dir)
        self.path = self.files.directory / f"q{os.getpid()}-{id(self) & 0xFFFF:x}.sock"
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self._id = 0

    def ask(self) -> None:
        if self.sock is None and self.error is None:
            self._bind()
        if self.sock is None:
            return
        self._id += 1
        try:
            self.sock.sendto(str(self._id).encode(), socket.MSG_DONTWAIT, str(self.files.query))
        except OSError:     # no engine listens, or its queue is full: this sample is lost
            pass

    def _bind(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            self.error = f"cannot bind {self.path}: {exc}"
            return
        self.sock = sock

    def answer(self, deadline: float) -> dict | None:
        """The queues the engine sent for the last ``ask``; None if not by ``deadline``."""
        while self.sock is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(QUERY_REPLY_MAX)
            except TimeoutError:
                return None
            reply = json.loads(data)
            if reply.get("request") == str(self._id):   # not a late answer to an earlier ask
                return reply
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.path.unlink(missing_ok=True)


def fresh_status(state_dir: str | os.PathLike, timeout: float = 2.0) -> dict | None:
    """The engine's status with counters as of now (SIGUSR1), None when none runs."""
    files = EngineFiles.of(state_dir)
    handle = read_handle(files)
    before = read_status(files)
    if not is_running(handle) or before is None:
        return None
    os.kill(handle.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read_status(files)
        if now is not None and now.get("stats_seq", 0) > before.get("stats_seq", 0):
            return now
        time.sleep(0.002)
    return read_status(files)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(handle: EngineHandle) -> None:
    """SIGTERM exactly this engine (pid + start time), SIGKILL after a grace period."""
    if not is_running(handle):
        _reap(handle.pid)
        return
    os.kill(handle.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        _reap(handle.pid)
        if not is_running(handle):
            return
        time.sleep(0.01)
    os.kill(handle.pid, signal.SIGKILL)
    time.sleep(0.05)
    _reap(handle.pid)


def _dead(handle: EngineHandle) -> str:
    return (f"the link engine (pid {handle.pid}) has died: packets on every emulated "
            "direction are being dropped, not delayed; run `testbed down` and `up` again")


def queue_bound(netns: str, queue: int) -> nfqueue.QueueStatus | None:
    """The kernel's view of NFQUEUE ``queue`` in ``netns`` (None: nobody listens)."""
    with Namespaces() as spaces, spaces.enter(netns):
        return _bound_here(queue)


def _bound_here(queue: int) -> nfqueue.QueueStatus | None:
    """NFQUEUE ``queue`` as the kernel shows it in this thread's namespace."""
    return _bound_all_here().get(queue)


def _bound_all_here() -> dict[int, nfqueue.QueueStatus]:
    """Every bound NFQUEUE of this thread's namespace."""
    try:
        text = Path("/proc/thread-self/net/netfilter/nfnetlink_queue").read_text()
    except OSError:
        return {}
    return nfqueue.parse_proc(text)


def check_alive(state_dir: str | os.PathLike, netns: str, queue: int) -> None:
    """Raise RealizeError unless the engine runs and lane (netns, queue) is bound by it."""
    files = EngineFiles.of(state_dir)
    handle = read_handle(files)
    if handle is None:
        raise RealizeError(f"no link engine serves {netns} queue {queue}: packets there are "
                           "being dropped; run `testbed down` and `up` again")
    if not is_running(handle):
        _reap(handle.pid)
        raise RealizeError(_dead(handle))
    lane = ((read_status(files) or {}).get("lanes") or {}).get(lane_key(netns, queue))
    _check_bound(handle, netns, queue, queue_bound(netns, queue), lane)


def check_lanes(state_dir: str | os.PathLike, lanes: list[tuple[str, int]]) -> None:
    """``check_alive`` for many lanes, reading the engine's status once."""
    files = EngineFiles.of(state_dir)
    handle = read_handle(files)
    if not is_running(handle):
        raise RealizeError(_dead(handle) if handle else "no link engine runs")
    status = (read_status(files) or {}).get("lanes") or {}
    by_netns: dict[str, list[int]] = {}
    for netns, queue in lanes:
        by_netns.setdefault(netns, []).append(queue)
    with Namespaces() as spaces:
        for netns, queues in by_netns.items():
            with spaces.enter(netns):
                bound = _bound_all_here()
            for queue in queues:
                _check_bound(handle, netns, queue, bound.get(queue),
                             status.get(lane_key(netns, queue)))


def _check_bound(handle: EngineHandle, netns: str, queue: int,
                 bound: nfqueue.QueueStatus | None, lane: dict | None) -> None:
    if bound is None or lane is None or bound.portid != lane["portid"]:
        raise RealizeError(f"NFQUEUE {queue} in {netns} is not bound by the link "
                           f"engine (pid {handle.pid}): packets there are being dropped")


def find_engines(namespaces: list[str], owner_tag: str) -> list[int]:
    """Pids of our engines running in ``namespaces`` (matched by exact argv and owner)."""
    found = []
    for pid in processes_in(namespaces):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if MODULE in args and "--owner" in args and \
                args[args.index("--owner") + 1:][:1] == [owner_tag]:
            found.append(pid)
    return found


def lane_status(state_dir: str | os.PathLike, netns: str, queue: int) -> dict:
    """One lane as ``link show``/``status`` report it: the engine, the kernel's queue,
    the lane's counters, the engine's release error against the configured delay and
    the compensation it takes off each delay for that."""
    files = EngineFiles.of(state_dir)
    handle = read_handle(files)
    status = fresh_status(state_dir) or {}
    bound = queue_bound(netns, queue)
    lane = (status.get("lanes") or {}).get(lane_key(netns, queue))
    return {"pid": None if handle is None else handle.pid, "netns": netns, "queue": queue,
            "alive": is_running(handle), "realtime": status.get("realtime"),
            "kernel": None if bound is None else vars(bound),
            "counters": None if lane is None else
            {k: v for k, v in lane.items() if k not in ("config", "portid")},
            "release_late_us": status.get("release_late_us"),
            "compensation_us": status.get("compensation_us")}


def describe(state_dir: str | os.PathLike) -> list[str]:
    """What ``up`` says about the engine: how many lanes one process serves, and the timer
    lateness it measured at its start (the floor of each delayed direction's error)."""
    files = EngineFiles.of(state_dir)
    handle, status = read_handle(files), read_status(files)
    if handle is None or status is None:
        return []
    late = (status.get("calibration") or {}).get("timer_late_us") or {}
    scheduler = "SCHED_FIFO" if status.get("realtime") else "the normal scheduler"
    lanes = len(status.get("lanes") or {})
    return [f"link engine: pid {handle.pid} serves {lanes} delayed directions in one process "
            f"({scheduler}); its timers woke {late.get('p50', '?')} us late at the median and "
            f"{late.get('p99', '?')} us at p99 when calibrated at start: about the error each "
            "delayed direction may add; each delay is shortened by the engine's measured mean "
            f"release lateness (now {status.get('compensation_us', 0)} us) so that on average "
            f"a link's latency is its configured delay; {pass_clause(status)}"]


def pass_clause(status: dict) -> str:
    """What the engine measured of the NFQUEUE pass of a woken arrival (passcal.py)."""
    calibration = status.get("calibration") or {}
    if calibration.get("pass_us") is not None:
        return (f"an arrival that wakes it is stamped {calibration['pass_us']} us before the "
                "wake-up (what an undelayed NFQUEUE pass added, measured at start)")
    why = calibration.get("pass_error") or "not measured"
    return (f"its NFQUEUE pass could not be measured ({why}): arrivals that wake it are "
            f"stamped the timer's lead ({round(status.get('lead_ns', 0) / 1e3, 1)} us) early")
