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
import os
import shutil
import signal
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for testbed.guest

from testbed.guest import build, vm  # noqa: E402

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]


def default_site_packages() -> str | None:
    env = os.environ.get("TESTBED_GUEST_SITE_PACKAGES")
    if env is not None:
        return env or None
    if sys.prefix != sys.base_prefix:  # running inside a venv: share it
        return sysconfig.get_paths()["purelib"]
    return None


def note(msg: str) -> None:
    print(f"[guest] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
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
    for kv in args.env:
        if "=" not in kv:
            ap.error(f"--env wants K=V, got {kv!r}")
    return args, command


def the_guest(args: argparse.Namespace) -> build.Guest:
    cache = build.cache_dir(args.cache)
    if not args.no_build:
        return build.ensure(cache)
    guest = build.Guest(cache / "vmlinux", cache / "initramfs.cpio.gz", cache / "rootfs.ext4",
                        build.kernel_version(build.kernel_dir(cache)))
    if not (guest.kernel.exists() and guest.initramfs.exists() and guest.image.exists()):
        raise build.BuildError(f"guest not built in {cache}: run build.py")
    return guest


def shares_of(args: argparse.Namespace) -> list[vm.Share]:
    shares = [vm.Share("project", Path(args.project).resolve(), "/project", True)]
    if args.site_packages:
        shares.append(vm.Share("site-packages", Path(args.site_packages).resolve(), "/site-packages", True))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        shares.append(vm.Share("out", Path(args.out).resolve(), "/out", False))
    return shares


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt()


def main(argv: list[str] | None = None) -> int:
    args, command = parse(sys.argv[1:] if argv is None else argv)
    if not shutil.which(vm.QEMU):
        note(f"{vm.QEMU} not found: apt-get install $(cat {HERE / 'apt-packages.txt'})")
        return 125
    try:
        guest = the_guest(args)
    except (build.BuildError, OSError) as e:
        note(f"guest build failed: {e}")
        return 125
    shares = shares_of(args)
    for s in shares:
        if not s.host.is_dir():
            note(f"not a directory: {s.host}")
            return 125
    env = vm.guest_env([s.path for s in shares if s.tag in ("project", "site-packages")],
                       dict(kv.split("=", 1) for kv in args.env))
    signal.signal(signal.SIGTERM, _on_sigterm)  # SIGTERM unwinds like Ctrl-C: QEMU is killed
    try:
        result = vm.run_command(guest, command, shares=shares, env=env,
                                machine=vm.Machine("tcg", args.memory, args.smp),
                                timeout=args.timeout, out=lambda line: print(line, flush=True),
                                cwd=args.cwd, modules=args.module, append=args.append,
                                verbose=note if args.verbose else None)
    except KeyboardInterrupt:
        note("interrupted: guest killed")
        return 130
    return report(result, args.timeout)


def report(result: vm.Boot, timeout: float) -> int:
    if result.boot_s is not None:
        note(f"booted in {result.boot_s:.1f} s")
    if result.returncode == vm.TIMED_OUT and result.timed_out:
        where = "in the command" if result.boot_s is not None else "while booting"
        note(f"timed out after {timeout:.0f} s ({where}); guest killed")
        if result.boot_s is None:
            print("\n".join(result.boot_log), file=sys.stderr)
    elif result.returncode == vm.GUEST_FAILED and result.boot_s is None:
        note("the guest stopped without reporting an exit code; last console lines:")
        print("\n".join(result.boot_log), file=sys.stderr)
    else:
        note(f"exit {result.returncode}; total {result.total_s:.1f} s")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
