#!/usr/bin/env python3
"""Boot the testbed guest under QEMU (TCG), run ONE command in it as root, power off.

    run.py [options] -- COMMAND [ARG...]

Inside the guest:
  /project        the project checkout, read-only (the working directory)
  /site-packages  the host venv's site-packages, read-only (on PYTHONPATH)
  /out            a writable host directory, if --out is given
and sch_netem, veth, sch_htb, sch_tbf, ifb, ... are loaded before COMMAND.
PYTHONPATH=/project:/site-packages, so `run.py -- python3 -m pytest
/project/tests/...` or `run.py -- python3 /project/some_script.py` work.

The command's output (stdout and stderr, merged on the serial console) is
streamed; run.py exits with the command's exit code, 124 on timeout, 125 if
the guest failed before running it. The guest has no network device.
The artefacts are built first if missing (see build.py).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build  # noqa: E402  (sibling module; this file is run as a script)

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
DEFAULT_MODULES = (
    "sch_netem", "sch_htb", "sch_tbf", "sch_ingress", "ifb", "veth",
    "cls_u32", "cls_matchall", "act_mirred",
)
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_site_packages() -> str | None:
    env = os.environ.get("TESTBED_GUEST_SITE_PACKAGES")
    if env is not None:
        return env or None
    if sys.prefix != sys.base_prefix:  # running inside a venv: share it
        return sysconfig.get_paths()["purelib"]
    return None


def note(msg: str) -> None:
    print(f"[guest] {msg}", file=sys.stderr, flush=True)


def qemu_argv(guest: build.Guest, rundir: Path, shares: list[dict], memory: int, smp: int,
              append: str = "") -> list[str]:
    argv = [
        "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", str(memory), "-smp", str(smp),
        "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(guest.kernel), "-initrd", str(guest.initramfs),
        "-append", f"console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off 8250.nr_uarts=1 {append}".strip(),
        # snapshot=on: the guest writes to a throwaway overlay; the image stays clean
        # and several guests can boot it at once.
        "-drive", f"file={guest.image},if=virtio,format=raw,snapshot=on",
        "-virtfs", f"local,path={rundir},mount_tag=testbed-run,security_model=none",
    ]
    for s in shares:
        ro = ",readonly=on" if s["readonly"] else ""
        argv += ["-virtfs", f"local,path={s['host']},mount_tag={s['tag']},security_model=none{ro}"]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        i = argv.index("--")
        opts, command = argv[:i], argv[i + 1:]
    else:
        opts, command = argv, []
    ap = argparse.ArgumentParser(
        usage="run.py [options] -- COMMAND [ARG...]",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="artefact cache (env TESTBED_GUEST_CACHE, default vagrant/guest/cache)")
    ap.add_argument("--project", default=str(PROJECT), help="host dir shared read-only at /project (default: this checkout)")
    ap.add_argument("--site-packages", default=default_site_packages(),
                    help="host dir shared read-only at /site-packages and put on PYTHONPATH "
                         "(default: the running venv's; env TESTBED_GUEST_SITE_PACKAGES, empty for none)")
    ap.add_argument("--out", help="host dir shared read-write at /out")
    ap.add_argument("--cwd", default="/project", help="working directory in the guest (default /project)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra environment variable")
    ap.add_argument("--module", action="append", default=[], help="extra kernel module to load")
    ap.add_argument("--timeout", type=float, default=600, help="seconds before the guest is killed (default 600)")
    ap.add_argument("--memory", type=int, default=1024, help="MiB (default 1024)")
    ap.add_argument("--smp", type=int, default=1, help="virtual CPUs (default 1)")
    ap.add_argument("--append", default="", help="extra kernel command line (e.g. 'loglevel=7' with -v)")
    ap.add_argument("--no-build", action="store_true", help="fail instead of building missing artefacts")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the boot log and QEMU command")
    args = ap.parse_args(opts)
    if not command:
        ap.error("no command: run.py [options] -- COMMAND [ARG...]")
    if not shutil.which("qemu-system-x86_64"):
        note(f"qemu-system-x86_64 not found: apt-get install $(cat {HERE / 'apt-packages.txt'})")
        return 125

    cache = build.cache_dir(args.cache)
    try:
        if args.no_build:
            guest = build.Guest(cache / "vmlinux", cache / "initramfs.cpio.gz", cache / "rootfs.ext4",
                                build.kernel_version(build.kernel_dir(cache)))
            if not (guest.kernel.exists() and guest.initramfs.exists() and guest.image.exists()):
                raise build.BuildError(f"guest not built in {cache}: run build.py")
        else:
            guest = build.ensure(cache)
    except (build.BuildError, OSError) as e:
        note(f"guest build failed: {e}")
        return 125

    shares = [{"tag": "project", "host": str(Path(args.project).resolve()), "path": "/project", "readonly": True}]
    pythonpath = ["/project"]
    if args.site_packages:
        shares.append({"tag": "site-packages", "host": str(Path(args.site_packages).resolve()),
                       "path": "/site-packages", "readonly": True})
        pythonpath.append("/site-packages")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        shares.append({"tag": "out", "host": str(Path(args.out).resolve()), "path": "/out", "readonly": False})
    for s in shares:
        if not Path(s["host"]).is_dir():
            note(f"not a directory: {s['host']}")
            return 125

    env = {
        "PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
        "PYTHONPATH": ":".join(pythonpath), "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
        # /project is read-only: keep pytest from trying to write its cache there.
        "PYTEST_ADDOPTS": "-p no:cacheprovider",
        "TESTBED_IN_GUEST": "1",
    }
    for kv in args.env:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--env wants K=V, got {kv!r}")
        env[k] = v

    nonce = uuid.uuid4().hex[:12]
    begin, end = f"@@testbed-guest-begin-{nonce}@@", f"@@testbed-guest-end-{nonce}@@"
    with tempfile.TemporaryDirectory(prefix="testbed-guest-") as tmp:
        rundir = Path(tmp)
        shutil.copy2(HERE / "guest_init.py", rundir / "guest_init.py")
        (rundir / "config.json").write_text(json.dumps({
            "argv": command, "env": env, "cwd": args.cwd, "shares": shares,
            "modules": list(DEFAULT_MODULES) + args.module,
            "begin_marker": begin, "end_marker": end,
        }))
        qargv = qemu_argv(guest, rundir, shares, args.memory, args.smp, args.append)
        if args.verbose:
            note("qemu: " + " ".join(qargv))
        return boot(qargv, rundir, begin, end, args.timeout, args.verbose)


def _die_with_parent() -> None:
    """In the QEMU child: get SIGKILL when run.py dies, even by SIGKILL (no orphaned guests)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise Terminated()


def boot(qargv: list[str], rundir: Path, begin: str, end: str, timeout: float, verbose: bool) -> int:
    t0 = time.monotonic()
    deadline = t0 + timeout
    signal.signal(signal.SIGTERM, _on_sigterm)  # SIGTERM unwinds through the finally below
    proc = subprocess.Popen(qargv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    boot_log: list[str] = []
    state = "boot"  # boot -> command -> done
    t_cmd = None
    end_rc = None
    buf = b""
    timed_out = False
    out = sys.stdout
    try:
        fd = proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # QEMU exited
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if state == "boot":
                    if line.startswith(begin):
                        state = "command"
                        t_cmd = time.monotonic()
                        extra = line[len(begin):].strip()
                        note(f"booted in {t_cmd - t0:.1f} s ({extra}); running the command")
                    else:
                        boot_log.append(line)
                        if verbose:
                            print(line, file=sys.stderr, flush=True)
                elif state == "command":
                    if line.startswith(end):
                        state = "done"
                        try:
                            end_rc = int(line.split("rc=")[1])
                        except (IndexError, ValueError):
                            pass
                    else:
                        out.write(line + "\n")
                        out.flush()
                elif verbose:
                    print(line, file=sys.stderr, flush=True)
    except (KeyboardInterrupt, Terminated):
        note("interrupted: guest killed")
        proc.kill()
        proc.wait()
        return 130
    finally:
        if proc.poll() is None:
            # Give a guest that already reported a moment to power off, then kill our QEMU.
            try:
                proc.wait(timeout=5 if state == "done" else 0.1)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        proc.stdout.close()

    total = time.monotonic() - t0
    rc_file = rundir / "rc"
    if timed_out and state != "done":
        note(f"timed out after {timeout:.0f} s ({'in the command' if state == 'command' else 'while booting'}); guest killed")
        if state == "boot":
            print("\n".join(boot_log[-40:]), file=sys.stderr)
        return 124
    if rc_file.exists():
        rc = int(rc_file.read_text().strip())
    elif end_rc is not None:
        rc = end_rc
    else:
        note(f"the guest stopped without reporting an exit code (QEMU exit {proc.returncode}); last console lines:")
        print("\n".join(boot_log[-40:]), file=sys.stderr)
        return 125
    cmd_s = f", command {total - (t_cmd - t0):.1f} s" if t_cmd else ""
    note(f"exit {rc}; total {total:.1f} s{cmd_s}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
