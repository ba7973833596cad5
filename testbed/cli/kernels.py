"""``testbed kernels`` (list, fetch) and ``testbed run W.yaml --kernel K ...``.

``testbed kernels`` lists what ``run --kernel`` can use: ``host`` and the
guest kernels the distribution's packages offer, by series and flavour, with
what is built and its size on disk. ``testbed kernels fetch 6.12`` builds one.

``testbed.cli.main.main`` hands the argv here when it holds ``--kernel``
(before a ``--``), as it does for ``--host``: the kernel options are taken out
wherever they appear, the rest is parsed by the normal parser (so mistakes are
reported before anything boots), then ``testbed.guest.runner`` runs the
workload on each kernel.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from testbed.cli.run import check_run_args
from testbed.cli import options, remote
from testbed.errors import ConfigError
from testbed.guest.vm import ACCELS
from testbed.output import say
from testbed.signals import stop_signals_raise

# option -> (destination, takes a value, converter)
OPTIONS: dict[str, tuple[str, Any]] = {
    "--kernel": ("kernels", str),
    "--accel": ("accel", str),
    "--vcpus": ("vcpus", int),
    "--guest-memory": ("memory", int),
    "--guest-timeout": ("timeout", float),
}
GIB = 1 << 30


def add_options(parser: argparse.ArgumentParser) -> None:
    """The kernel options, for ``testbed --help`` (they are handled before parsing)."""
    g = parser.add_argument_group("kernels (with 'run'; see 'testbed kernels')")
    g.add_argument("--kernel", metavar="K", help="run every matrix point on kernel K: 'host' "
                   "or a guest kernel (6.1, 6.12, 6.12-rt, 6.1.0-57, ...); repeatable")
    g.add_argument("--accel", choices=ACCELS, help="guest acceleration "
                   "(default auto: KVM if a guest really boots with it, else TCG, warned)")
    g.add_argument("--vcpus", metavar="N", help="guest virtual CPUs (default 1)")
    g.add_argument("--guest-memory", metavar="MIB", help="guest memory (default 1024)")
    g.add_argument("--guest-timeout", metavar="S", help="seconds before a guest is killed "
                   "(default: 300 + 3 x each run's planned length + 60 per run)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "kernels", help="kernels 'run --kernel' can use: list them, fetch (build) one",
        description="List the kernels 'run --kernel' can use: host, and Debian kernel images "
                    "by series and flavour, with what is built (and its size).")
    sub = p.add_subparsers(dest="kernels_command", metavar="ACTION")
    f = sub.add_parser("fetch", help="build a guest kernel (1-3 min; needs root and the mirror)")
    f.add_argument("choice", nargs="+", metavar="K", help="6.1, 6.12, 6.12-cloud, 6.1.0-57-rt ...")
    f.add_argument("--force", action="store_true", help="rebuild it from nothing")
    f.set_defaults(func=fetch_command)
    p.set_defaults(func=list_command)


def list_command(args: argparse.Namespace) -> int:
    from testbed.guest import catalog  # stdlib only, but not for --help
    root = catalog.cache_root()
    built = catalog.cached(root)
    print(f"host      {_host_release()} (this machine's kernel)")
    for kernel, size in [(k, catalog.directory_size(catalog.kernel_dir(k, root))) for k in built]:
        print(f"built     {kernel.name:28} {_size(size):>9}  {catalog.kernel_dir(kernel, root)}")
    base = root / catalog.BASE_DIR_NAME
    if base.is_dir():
        print(f"base root {'(shared by the built kernels)':28} "
              f"{_size(catalog.directory_size(base)):>9}  {base}")
    for line in _offered_lines(catalog.available(), set(built)):
        print(line)
    return 0


def _size(nbytes: int) -> str:
    """Bytes on disk for people: MiB below a GiB, else GiB."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes >> 20} MiB"


def _host_release() -> str:
    import platform
    return platform.release()


def _offered_lines(offered: list[Any], built: set[Any]) -> list[str]:
    """One line per series and flavour: the newest version, and how many more."""
    from testbed.guest import catalog  # see list_command
    by_series: dict[tuple[str, str], list[Any]] = {}
    for k in offered:
        by_series.setdefault((k.series, k.flavour), []).append(k)
    lines = []
    for (series, flavour), ks in sorted(by_series.items(),
                                        key=lambda i: (ks_key(i[0][0]), catalog.FLAVOURS.index(i[0][1]))):
        choice = series if flavour == "generic" else f"{series}-{flavour}"
        newest = ks[-1]
        mark = "built" if newest in built else "not built"
        lines.append(f"offered   {choice:12} newest {newest.version} ({mark}; "
                     f"{len(ks)} version(s): --kernel {choice} or e.g. {ks[0].name})")
    if not offered:
        lines.append("offered   (apt-cache lists no linux-image packages: apt-get update?)")
    return lines


def ks_key(series: str) -> tuple[int, ...]:
    return tuple(int(x) for x in series.split("."))


def fetch_command(args: argparse.Namespace) -> int:
    from testbed.guest import catalog, runner  # the builder is heavy on nothing, but quiet on --help
    offered = catalog.available()
    kernels = [catalog.resolve(c, offered, []) for c in args.choice]
    for kernel in kernels:
        guest = runner.fetch(kernel, force=args.force)
        size = catalog.directory_size(catalog.kernel_dir(kernel))
        print(f"{kernel.name}: {guest.kernel_version}, {_size(size)} in "
              f"{catalog.kernel_dir(kernel)}")
    return 0


# ---- run --kernel ----------------------------------------------------------------------

def wants_kernels(argv: Sequence[str]) -> bool:
    items = list(argv)
    head = items[:items.index("--")] if "--" in items else items
    return any(a.partition("=")[0] == "--kernel" for a in head)


def split_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Take the kernel options out of ``argv`` (not after ``--``): (values, the rest)."""
    found: dict[str, Any] = {"kernels": []}
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        flag, eq, value = items[i].partition("=")
        if items[i] == "--":
            rest += items[i:]
            break
        if flag not in OPTIONS:
            rest.append(items[i])
            i += 1
            continue
        if not eq:
            if i + 1 >= len(items):
                raise ConfigError(f"{flag} needs a value")
            i += 1
            value = items[i]
        found_key, convert = OPTIONS[flag]
        found[found_key] = _converted(flag, value, convert, found)
        i += 1
    return found, rest


def _converted(flag: str, value: str, convert: Any, found: dict[str, Any]) -> Any:
    try:
        converted = convert(value)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: expected a number") from None
    if flag == "--kernel":
        return [*found["kernels"], converted]
    if flag == "--accel" and value not in ACCELS:
        raise ConfigError(f"--accel {value!r}: expected {', '.join(ACCELS)}")
    if flag != "--accel" and converted <= 0:
        raise ConfigError(f"{flag} {value}: must be more than 0")
    return converted


def main(argv: Sequence[str], parser: argparse.ArgumentParser) -> int:
    """``run ... --kernel K ...``: the workload on every kernel named."""
    if remote.wants_remote(argv):
        raise ConfigError("--kernel runs guests on this machine: not with --host/--hosts")
    found, rest = split_argv(argv)
    args = parser.parse_args(rest)
    if args.command != "run":
        raise ConfigError("--kernel is an option of 'run' (see 'testbed kernels')")
    check_run_args(args)
    if args.testbed_name:
        raise ConfigError("--kernel brings a testbed up on each kernel: not with --testbed")
    # guest.runner loads workloads (jinja2, yaml) and the remote argv helpers: only with --kernel
    from testbed.guest import runner
    from testbed.remote.workload import remote_run
    kernels = runner.resolve_all(found["kernels"])
    run = remote_run(rest, args.workload, variables=options.variables(args), repeat=args.repeat,
                     output=args.output, instance=args.name, attached=False)
    defaults = runner.GuestOptions()
    guest_options = runner.GuestOptions(
        accel=found.get("accel", defaults.accel), vcpus=found.get("vcpus", defaults.vcpus),
        memory=found.get("memory", defaults.memory), timeout=found.get("timeout", defaults.timeout))
    with stop_signals_raise():  # SIGTERM/SIGHUP unwind like Ctrl-C: QEMU killed, temp dirs gone
        outcome = runner.run_on_kernels(run, rest, kernels, guest_options,
                                        log=lambda line: say(sys.stderr, line))
    for d in outcome.dirs:
        print(d)
    error = outcome.error()
    if error is not None:
        raise error
    return 0

