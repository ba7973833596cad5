"""Boot a built guest under QEMU, run ONE command in it as root, power off.

Inside the guest (set up by ``guest_init.py``, PID 1): the host directories of
``shares`` mounted over 9p, the network modules loaded, the command run with
``env`` in ``cwd``; its output (stdout and stderr merged on the serial console)
comes back between two marker lines, its exit code through a file on the
per-run share. The guest has no network device.

Nothing outlives a boot on the host: QEMU is killed at the timeout, on any
exception (Ctrl-C included) and, by a parent-death signal, when this process
dies; the per-run directory is a temporary directory removed on the way out.

Acceleration: KVM where ``/dev/kvm`` really boots this kernel (``kvm_works``
tries it), else TCG (software emulation, several times slower).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from testbed.guest.build import Guest

HERE = Path(__file__).resolve().parent
GUEST_INIT = HERE / "guest_init.py"
QEMU = "qemu-system-x86_64"
DEFAULT_MODULES = (
    "sch_netem", "sch_htb", "sch_tbf", "sch_ingress", "ifb", "veth",
    "cls_u32", "cls_matchall", "act_mirred",
)
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ACCELS = ("auto", "kvm", "tcg")  # auto: KVM when a guest really boots with it, else TCG
TIMED_OUT = 124
GUEST_FAILED = 125
KVM_PROBE_TIMEOUT = 15.0  # a KVM guest runs its command in ~2 s; one that hangs (as here) never does


@dataclass(frozen=True)
class Share:
    """A host directory mounted in the guest over 9p."""

    tag: str
    host: Path
    path: str
    readonly: bool

    def as_config(self) -> dict[str, object]:
        return {"tag": self.tag, "host": str(self.host), "path": self.path,
                "readonly": self.readonly}


@dataclass(frozen=True)
class Machine:
    """How the guest is emulated: ``accel`` kvm or tcg, memory in MiB, virtual CPUs."""

    accel: str = "tcg"
    memory: int = 1024
    smp: int = 1


@dataclass
class Boot:
    """What one boot did: the command's exit code (124 timed out, 125 the guest failed
    before the command), seconds to the command and in all, the boot log's tail."""

    returncode: int
    boot_s: float | None = None
    total_s: float = 0.0
    timed_out: bool = False
    boot_log: list[str] = field(default_factory=list)


def qemu_argv(guest: Guest, rundir: Path, shares: Sequence[Share], machine: Machine,
              append: str = "") -> list[str]:
    cpu = "host" if machine.accel == "kvm" else "max"
    argv = [
        QEMU, "-accel", machine.accel, "-cpu", cpu, "-m", str(machine.memory),
        "-smp", str(machine.smp), "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(guest.kernel), "-initrd", str(guest.initramfs),
        "-append", f"console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off 8250.nr_uarts=1 "
                   f"{append}".strip(),
        # snapshot=on: the guest writes to a throwaway overlay; the image stays clean
        # and several guests can boot it at once.
        "-drive", f"file={guest.image},if=virtio,format=raw,snapshot=on",
        "-virtfs", f"local,path={rundir},mount_tag=testbed-run,security_model=none",
    ]
    for s in shares:
        ro = ",readonly=on" if s.readonly else ""
        argv += ["-virtfs", f"local,path={s.host},mount_tag={s.tag},security_model=none{ro}"]
    return argv


def guest_env(pythonpath: Sequence[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The command's environment in the guest."""
    env = {
        "PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
        "PYTHONPATH": ":".join(pythonpath), "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        # the shared project is read-only: keep pytest from trying to write its cache there
        "PYTEST_ADDOPTS": "-p no:cacheprovider",
        "TESTBED_IN_GUEST": "1",
    }
    env.update(extra or {})
    return env


def run_command(guest: Guest, command: Sequence[str], *, shares: Sequence[Share],
                env: dict[str, str], machine: Machine, timeout: float,
                out: Callable[[str], None], cwd: str = "/", modules: Sequence[str] = (),
                append: str = "", verbose: Callable[[str], None] | None = None) -> Boot:
    """Boot ``guest``, run ``command``, power off; ``out`` gets each line it prints."""
    nonce = uuid.uuid4().hex[:12]
    markers = (f"@@testbed-guest-begin-{nonce}@@", f"@@testbed-guest-end-{nonce}@@")
    with tempfile.TemporaryDirectory(prefix="testbed-guest-") as tmp:
        rundir = Path(tmp)
        shutil.copy2(GUEST_INIT, rundir / "guest_init.py")
        (rundir / "config.json").write_text(json.dumps({
            "argv": list(command), "env": env, "cwd": cwd,
            "shares": [s.as_config() for s in shares],
            "modules": [*DEFAULT_MODULES, *modules],
            "begin_marker": markers[0], "end_marker": markers[1],
        }))
        qargv = qemu_argv(guest, rundir, shares, machine, append)
        if verbose:
            verbose("qemu: " + " ".join(qargv))
        return boot(qargv, rundir, markers, timeout, out, verbose)


def _die_with_parent() -> None:
    """In the QEMU child: SIGKILL when our process dies, even by SIGKILL (no orphaned guest)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def boot(qargv: list[str], rundir: Path, markers: tuple[str, str], timeout: float,
         out: Callable[[str], None], verbose: Callable[[str], None] | None = None) -> Boot:
    """Start QEMU, follow the console until the end marker, QEMU's exit or the timeout."""
    t0 = time.monotonic()
    proc = subprocess.Popen(qargv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    console = _Console(markers, out, verbose)
    try:
        assert proc.stdout is not None
        timed_out = not _follow(proc.stdout.fileno(), console, t0 + timeout)
    finally:
        _stop(proc, grace=5.0 if console.state == "done" else 0.1)
    result = Boot(returncode=GUEST_FAILED, total_s=time.monotonic() - t0, timed_out=timed_out,
                  boot_s=None if console.t_command is None else console.t_command - t0,
                  boot_log=console.boot_log[-40:])
    rc_file = rundir / "rc"
    if timed_out and console.state != "done":
        result.returncode = TIMED_OUT
    elif rc_file.exists():
        result.returncode = int(rc_file.read_text().strip())
    elif console.end_rc is not None:
        result.returncode = console.end_rc
    return result


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Let a guest that reported power off for ``grace`` seconds, then kill its QEMU."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()


def _follow(fd: int, console: _Console, deadline: float) -> bool:
    """Feed the console until QEMU closes it (True) or ``deadline`` passes (False)."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return True
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            console.line(raw.decode(errors="replace").rstrip("\r"))


class _Console:
    """The serial console's lines: boot log, then the command's output between the markers."""

    def __init__(self, markers: tuple[str, str], out: Callable[[str], None],
                 verbose: Callable[[str], None] | None) -> None:
        self.begin, self.end = markers
        self.out = out
        self.verbose = verbose
        self.state = "boot"  # boot -> command -> done
        self.t_command: float | None = None
        self.end_rc: int | None = None
        self.boot_log: list[str] = []

    def line(self, line: str) -> None:
        if self.state == "boot" and line.startswith(self.begin):
            self.state, self.t_command = "command", time.monotonic()
        elif self.state == "boot":
            self.boot_log.append(line)
            if self.verbose:
                self.verbose(line)
        elif self.state == "command" and line.startswith(self.end):
            self.state = "done"
            rc = line.split("rc=")[-1]
            self.end_rc = int(rc) if rc.isdigit() else None
        elif self.state == "command":
            self.out(line)
        elif self.verbose:
            self.verbose(line)


def kvm_usable() -> str | None:
    """Why KVM cannot be used here without trying a boot, or None."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable"
    return None


def kvm_works(guest: Guest, timeout: float = KVM_PROBE_TIMEOUT) -> str | None:
    """Boot ``guest`` under KVM running ``true``: None if it did, else why not."""
    reason = kvm_usable()
    if reason:
        return reason
    lines: list[str] = []
    result = run_command(guest, ["true"], shares=(), env=guest_env([]),
                         machine=Machine(accel="kvm", memory=256), timeout=timeout,
                         out=lines.append)
    if result.returncode == 0:
        return None
    if result.timed_out:
        return f"a KVM guest did not finish booting in {timeout:.0f} s"
    tail = " / ".join(l for l in result.boot_log[-3:] if l.strip())
    return f"a KVM guest failed ({tail or f'exit {result.returncode}'})"
