"""``testbed run W.yaml --kernel host --kernel 6.1 --kernel 6.12``: one workload, several kernels.

For each kernel in turn, every point of the workload's matrix runs there:
``host`` runs ``testbed run`` here; a guest kernel boots once (QEMU, KVM if it
really works, else TCG with a warning) and runs the same ``testbed run`` inside,
on the workload and topology files shipped into a temporary directory shared with
the guest. Run directories come home into the one ``--output`` tree, as remote
runs do, each annotated with the kernel it ran on (``testbed.guest.record``),
ready for ``compare --by kernel.release``.

A guest that does not finish within its timeout is killed; nothing of it stays on
the host but what it wrote into the results (``testbed.guest.vm``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from testbed.errors import PreflightError, TestbedError, WorkloadError
from testbed.files import contained
from testbed.guest import build, catalog, record, vm
from testbed.remote.session import WORKLOAD_SLOT
from testbed.remote.workload import RemoteRun
from testbed.workload import load_source, load_workload

# what testbed run imports in the guest (the guest's python3 is Debian's 3.11: pure-python
# and abi3 wheels of the host's import there)
DEPENDENCIES = ("yaml", "jinja2", "markupsafe", "pyroute2", "psutil")
# congestion controls loaded before the run, so that preflight finds them available
BOOT_MARGIN = 300.0  # seconds: a TCG boot takes 12-22 s, a loaded host more
CC_MODULES = ("tcp_bbr", "tcp_vegas", "tcp_westwood", "tcp_htcp", "tcp_dctcp")


@dataclass(frozen=True)
class GuestOptions:
    """How guests are run: acceleration (auto: KVM when it works), vCPUs, MiB, and the
    seconds before a guest is killed (None: ``guest_timeout`` of the workload)."""

    accel: str = "auto"
    vcpus: int = 1
    memory: int = 1024
    timeout: float | None = None


@dataclass
class Outcome:
    """What the kernels brought home, and which of them failed."""

    dirs: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def error(self) -> WorkloadError | None:
        if not self.failed:
            return None
        return WorkloadError(f"{len(self.failed)} kernel(s) failed: {'; '.join(self.failed)}"
                             + (f"; results of the others: {len(self.dirs)} run(s)"
                                if self.dirs else ""))


def resolve_all(choices: list[str]) -> list[catalog.Kernel | None]:
    """Each ``--kernel`` as a Kernel (None for host), all checked before anything runs."""
    catalog.check_choices(choices)
    guests = [c for c in choices if c != catalog.HOST]
    offered = catalog.available() if guests else []
    built = catalog.cached()
    return [None if c == catalog.HOST else catalog.resolve(c, offered, built) for c in choices]


def run_on_kernels(run: RemoteRun, host_argv: list[str], kernels: list[catalog.Kernel | None],
                   options: GuestOptions, log: Callable[[str], None]) -> Outcome:
    """Run ``run`` on each kernel in turn; ``host_argv`` is the local ``run`` argv."""
    outcome = Outcome()
    accel = _AccelChoice(options.accel, log)
    for kernel in kernels:
        name = kernel.name if kernel else catalog.HOST
        log(f"testbed: kernel {name}: running {len(run.points)} run(s)")
        try:
            dirs, rc = (_on_host(host_argv) if kernel is None
                        else _in_guest(run, kernel, options, accel, log))
        except TestbedError as exc:
            outcome.failed.append(f"{name}: {exc}")
            continue
        outcome.dirs += dirs
        if rc != 0:
            outcome.failed.append(f"{name}: exit {rc}")
    return outcome


def _on_host(argv: list[str]) -> tuple[list[Path], int]:
    """``testbed run`` here, as a child (its stderr shown): the run dirs it printed."""
    proc = subprocess.run([sys.executable, "-m", "testbed", *argv], stdout=subprocess.PIPE,
                          text=True)
    dirs = [Path(line) for line in proc.stdout.splitlines() if line.strip()]
    kernel = record.host_record()
    for d in dirs:
        record.annotate(d, kernel)
    return dirs, proc.returncode


class _AccelChoice:
    """kvm or tcg, decided once per command: KVM only when a guest really boots with it
    (trying costs up to ``vm.KVM_PROBE_TIMEOUT`` where it hangs, so it is tried once)."""

    def __init__(self, wanted: str, log: Callable[[str], None]) -> None:
        self.wanted = wanted
        self.log = log
        self.decided: tuple[str, str | None] | None = None

    def __call__(self, guest: build.Guest) -> tuple[str, str | None]:
        """(kvm or tcg, why not KVM)."""
        if self.decided is None:
            self.decided = self._decide(guest)
        return self.decided

    def _decide(self, guest: build.Guest) -> tuple[str, str | None]:
        if self.wanted == "tcg":
            return "tcg", "--accel tcg"
        why_not = vm.kvm_works(guest)
        if why_not is None:
            return "kvm", None
        if self.wanted == "kvm":
            raise WorkloadError(f"--accel kvm: KVM does not work here: {why_not}")
        self.log(f"testbed: WARNING: KVM unusable ({why_not}); guests run under TCG (software "
                 "emulation): several times slower, timings loose, high rates out of reach; "
                 "runs record kernel.mode tcg")
        return "tcg", why_not


def guest_timeout(run: RemoteRun) -> float:
    """Long enough for a guest under TCG to run ``run``: a boot's margin, then per run
    three times its planned length (TCG; 10 s flagship points took 25-30 s) plus a minute
    for bringing the testbed up and down."""
    source = load_source(run.workload)
    planned = [load_workload(run.workload, p.variables, source=source).planned_seconds
               for p in run.points]
    return BOOT_MARGIN + sum(3 * seconds + 60 for seconds in planned)


def _in_guest(run: RemoteRun, kernel: catalog.Kernel, options: GuestOptions,
              choose_accel: _AccelChoice, log: Callable[[str], None]) -> tuple[list[Path], int]:
    if not catalog.is_built(catalog.kernel_dir(kernel)):
        log(f"testbed: kernel {kernel.name} is not built yet: building it (1-3 min)")
    guest = fetch(kernel)
    accel, why_not = choose_accel(guest)
    timeout = options.timeout or guest_timeout(run)
    with tempfile.TemporaryDirectory(prefix="testbed-kernel-") as tmp:
        stage = Path(tmp)
        argv = _guest_argv(run, _ship([run.workload, *run.topologies], stage / "in"))
        shares = _shares(stage)
        result = vm.run_command(
            guest, ["python3", "-m", "testbed", *argv], shares=shares,
            env=vm.guest_env([share.path for share in shares if share.readonly]),
            machine=vm.Machine(accel, options.memory, options.vcpus), timeout=timeout,
            out=_prefixed(log, f"[{kernel.name}] "), cwd="/out", modules=CC_MODULES)
        if result.timed_out:
            log(f"testbed: kernel {kernel.name}: the guest did not finish in "
                f"{timeout:.0f} s; killed")
        guest_record = record.GuestRecord(
            kernel=kernel.name, package=kernel.package, release=guest.kernel_version,
            accel=accel, vcpus=options.vcpus, memory_mib=options.memory,
            boot_s=result.boot_s, accel_note=why_not, timed_out=result.timed_out)
        dirs = _bring_home(stage / "results", run.output, _kernel_record(kernel, guest, accel),
                           guest_record)
    return dirs, result.returncode


def _kernel_record(kernel: catalog.Kernel, guest: build.Guest, accel: str) -> record.KernelRecord:
    config = (build.kernel_dir(catalog.kernel_dir(kernel)) / "boot" /
              f"config-{guest.kernel_version}")
    return record.KernelRecord(flavour=kernel.flavour, mode=accel, package=kernel.package,
                               config_hash=record.config_hash(config))


def _prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    """A console line as one log line: of a progress line redrawn with CR, its last state."""
    def write(line: str) -> None:
        shown = [part.rstrip() for part in line.split("\r") if part.strip()]
        if shown:
            log(prefix + shown[-1])
    return write


def fetch(kernel: catalog.Kernel, force: bool = False) -> build.Guest:
    """Build ``kernel``'s guest in the cache (or find it there)."""
    root = catalog.cache_root()
    if os.geteuid() != 0 and not catalog.is_built(catalog.kernel_dir(kernel, root)):
        raise PreflightError(f"building guest kernel {kernel.name} needs root (debootstrap, "
                             f"mkfs.ext4 -d, the cache {root}): run it with sudo")
    return build.ensure(catalog.kernel_dir(kernel, root), force=force, package=kernel.package,
                        base=root / catalog.BASE_DIR_NAME)


def _ship(files: list[Path], into: Path) -> dict[Path, str]:
    """Copy ``files`` under ``into`` keeping their relative layout; their guest paths."""
    resolved = [f.resolve() for f in files]
    base = Path(os.path.commonpath([f.parent for f in resolved]))
    mapping = {}
    for f in resolved:
        rel = f.relative_to(base).as_posix()
        (into / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, into / rel)
        mapping[f] = f"/out/in/{rel}"
    return mapping


def _guest_argv(run: RemoteRun, mapping: dict[Path, str]) -> list[str]:
    workload = mapping[run.workload.resolve()]
    argv = [workload if a == WORKLOAD_SLOT else a for a in run.argv]
    argv += ["--output", "/out/results"]
    return argv + (["--name", run.instance] if run.instance else [])


def _shares(stage: Path) -> list[vm.Share]:
    """testbed's own code and the directories its dependencies import from (read-only),
    the staging directory (read-write)."""
    code = Path(__file__).resolve().parents[2]  # the directory holding the testbed package
    shares = [vm.Share("testbed-code", code, "/testbed-code", True)]
    for i, directory in enumerate(d for d in _dependency_dirs() if d != code):
        shares.append(vm.Share(f"deps{i}", directory, f"/deps{i}", True))
    return [*shares, vm.Share("out", stage, "/out", False)]


def _dependency_dirs() -> list[Path]:
    """Where this interpreter imports testbed's dependencies from (a venv's site-packages,
    or Debian's dist-packages), each once."""
    found: list[Path] = []
    for name in DEPENDENCIES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        directory = Path(spec.origin).resolve().parents[1]
        if directory not in found:
            found.append(directory)
    return found


def _bring_home(results: Path, output: Path, kernel: record.KernelRecord,
                guest: record.GuestRecord) -> list[Path]:
    """Move the guest's run directories into ``output``, each annotated."""
    dirs: list[Path] = []
    if not results.is_dir():
        return dirs
    for wl in sorted(results.iterdir()):
        for run_dir in sorted(wl.iterdir()):
            home = contained(contained(output, wl.name, what="workload name"), run_dir.name,
                             what="run id")
            home.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(run_dir), str(home))
            record.annotate(home, kernel, guest)
            dirs.append(home)
    return dirs
