"""Which kernels a run can use: ``host``, and Debian kernel images by version and flavour.

A guest kernel is named by its Debian image package, ``linux-image-<version>-[<flavour>-]amd64``
(``6.1.0-57``, ``6.12.117+deb12``; flavour ``generic``, ``cloud`` or ``rt``). What the
distribution offers comes from ``apt-cache search``; what is built lives in
``<cache root>/<version>-<flavour>/`` (default ``/var/cache/testbed/kernels``, root's).

A choice on the command line (``--kernel 6.12``, ``6.1-rt``, ``6.12.117+deb12-cloud``,
``host``) is resolved here: a series (``6.12``) means its newest build in the cache, else
its newest package; a flavour suffix picks the flavour (default ``generic``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import ConfigError

DEFAULT_ROOT = Path("/var/cache/testbed/kernels")
BASE_DIR_NAME = "base-bookworm"
FLAVOURS = ("generic", "cloud", "rt")
HOST = "host"
_PACKAGE = re.compile(r"^linux-image-(?P<version>\d+\.\d+(?:\.\d+)?(?:-\d+|\+deb\d+))-"
                      r"(?:(?P<flavour>cloud|rt)-)?amd64$")
_CACHED = re.compile(r"^(?P<version>\d+\.\d+(?:\.\d+)?(?:-\d+|\+deb\d+))-(?P<flavour>"
                     + "|".join(FLAVOURS) + ")$")
_CHOICE = re.compile(r"^(?P<version>\d+\.\d+(?:\.\d+)?(?:-\d+|\+deb\d+)?)"
                     r"(?:-(?P<flavour>" + "|".join(FLAVOURS) + "))?$")


@dataclass(frozen=True, order=True)
class Kernel:
    """One Debian kernel image: ``version`` as in its package name, ``flavour``."""

    version: str
    flavour: str

    @property
    def series(self) -> str:
        """``6.1``, ``6.12``: what a user types."""
        return ".".join(self.version.split(".")[:2]).split("-")[0].split("+")[0]

    @property
    def package(self) -> str:
        middle = "" if self.flavour == "generic" else f"{self.flavour}-"
        return f"linux-image-{self.version}-{middle}amd64"

    @property
    def name(self) -> str:
        """The cache directory's name and how runs and listings show it."""
        return f"{self.version}-{self.flavour}"

    def sort_key(self) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", self.version))


def parse_package(name: str) -> Kernel | None:
    """The kernel of an image package name (None for meta packages and other names)."""
    m = _PACKAGE.match(name.strip())
    return Kernel(m["version"], m["flavour"] or "generic") if m else None


def parse_apt_search(text: str) -> list[Kernel]:
    """Kernels in ``apt-cache search --names-only`` output (``package - description`` lines)."""
    found = {k for line in text.splitlines() if (k := parse_package(line.split(" - ")[0]))}
    return sorted(found, key=Kernel.sort_key)


def available() -> list[Kernel]:
    """The kernel images the distribution's packages offer (empty without apt-cache)."""
    if not shutil.which("apt-cache"):
        return []
    proc = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-[0-9].*-amd64$"],
                          capture_output=True, text=True, timeout=60)
    return parse_apt_search(proc.stdout) if proc.returncode == 0 else []


def cache_root() -> Path:
    return Path(os.environ.get("TESTBED_KERNEL_CACHE") or DEFAULT_ROOT)


def kernel_dir(kernel: Kernel, root: Path | None = None) -> Path:
    return (root or cache_root()) / kernel.name


def is_built(directory: Path) -> bool:
    """Every artefact the guest boots from is there, with its key (the build finished)."""
    return all((directory / f"{name}.key").is_file()
               for name in ("vmlinux", "rootfs.ext4", "initramfs.cpio.gz"))


def cached(root: Path | None = None) -> list[Kernel]:
    """The kernels built in the cache."""
    root = root or cache_root()
    if not root.is_dir():
        return []
    found = [Kernel(m["version"], m["flavour"]) for d in root.iterdir()
             if (m := _CACHED.match(d.name)) and is_built(d)]
    return sorted(found, key=Kernel.sort_key)


def resolve(choice: str, offered: list[Kernel], built: list[Kernel]) -> Kernel:
    """The kernel ``choice`` names: built ones first, then the newest offered."""
    m = _CHOICE.match(choice)
    if not m:
        raise ConfigError(f"--kernel {choice!r}: expected 'host', a series like 6.12, or a "
                          f"version like 6.1.0-57, optionally with -{'/-'.join(FLAVOURS[1:])}")
    version, flavour = m["version"], m["flavour"] or "generic"

    def matches(k: Kernel) -> bool:
        return k.flavour == flavour and (k.version == version or k.series == version)
    for pool in (built, offered):
        hits = sorted((k for k in pool if matches(k)), key=Kernel.sort_key)
        if hits:
            return hits[-1]
    raise ConfigError(f"--kernel {choice}: no such kernel; available: {describe_choices(offered, built)}")


def describe_choices(offered: list[Kernel], built: list[Kernel]) -> str:
    """``host, 6.1, 6.1-cloud, ..., 6.12-rt (built: 6.1.0-57-generic)``: what an error lists."""
    every = set(offered) | set(built)
    series = sorted({(k.series, k.flavour) for k in every},
                    key=lambda sf: (tuple(int(x) for x in sf[0].split(".")), FLAVOURS.index(sf[1])))
    short = ["host"] + [s if f == "generic" else f"{s}-{f}" for s, f in series]
    text = ", ".join(short)
    if built:
        text += f" (built: {', '.join(k.name for k in built)})"
    if not every:
        text += " (apt-cache offers no linux-image packages and the cache is empty)"
    return text + "; 'testbed kernels' lists every version"


def directory_size(path: Path) -> int:
    """Bytes on disk under ``path`` (sparse images count what they use)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


def check_choices(choices: list[str]) -> None:
    """The same kernel twice is a mistake on the command line."""
    seen = set()
    for c in choices:
        if c in seen:
            raise ConfigError(f"--kernel {c} given twice")
        seen.add(c)


def host_flavour(release: str) -> str:
    """``6.1.0-57-cloud-amd64`` -> cloud; ``...-rt-amd64`` -> rt; anything else generic."""
    for f in FLAVOURS[1:]:
        if re.search(rf"-{f}(-|$)", release):
            return f
    return "generic"

