#!/usr/bin/env python3
"""Build (and cache) a small Debian guest that has the real sch_netem.

The host kernels we run CI on lack sch_netem, and KVM is not usable there,
so the netem code path is exercised inside a Debian kernel booted under
QEMU with software emulation (TCG). This script builds what that guest
needs, each artefact only when it is missing or its inputs changed:

  kernel/           the Debian kernel package extracted with dpkg-deb,
                    depmod run on the tree
  vmlinux           its uncompressed ELF (boots via PVH: no decompression
                    under TCG)
  rootfs/           debootstrap --variant=minbase bookworm, with python3,
                    iproute2, ping, kmod and the network/filesystem modules
  rootfs.ext4       that tree as an ext4 image (booted with snapshot=on,
                    so every boot starts from the same state)
  initramfs.cpio.gz busybox-static + the modules needed to mount the root
                    and the 9p shares; its /init hands over to the runner

Stdlib only; every external tool is called with an argv list.
Which kernel: the one Debian's ``linux-image-amd64`` depends on by default, or
any image package given (``--package linux-image-6.12.117+deb12-cloud-amd64``);
``testbed kernels`` chooses them. The debootstrap'ed root (everything but the
modules) is shared by the kernels built next to each other (``--base DIR``).

Stdlib only (and testbed.errors); every external tool is called with an argv list.
Usage: build.py [--cache DIR] [--base DIR] [--package PKG] [--mirror URL] [--force]
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from testbed.errors import PreflightError

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE.parents[1] / "vagrant" / "guest" / "cache"
APT_PACKAGES_FILE = "vagrant/guest/apt-packages.txt"
SUITE = "bookworm"
KERNEL_META_PACKAGE = "linux-image-amd64"

# Packages in the guest root: python3 (Debian bookworm's 3.11, so the host venv's
# pure-python and cp311 wheels import in the guest) and every tool `testbed run` calls
# (doctor's list: iperf3, tcpdump, ping, ethtool, iptables; nft for nftables).
ROOTFS_PACKAGES = ("python3", "iproute2", "iputils-ping", "kmod", "iperf3", "tcpdump",
                   "ethtool", "iptables", "nftables")

# Modules copied into the guest root (paths under kernel/, prefix match),
# then closed over their dependencies. Enough for every qdisc, classifier,
# action, netfilter match, congestion control and virtual link the project
# may touch; the rest of the 390 MB module tree (GPUs, sound, wifi) is left out.
ROOTFS_MODULE_PREFIXES = (
    "kernel/net/",
    "kernel/lib/",
    "kernel/crypto/",
    "kernel/arch/",
    "kernel/fs/",
    "kernel/drivers/virtio/",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/char/virtio_console.ko",
)
# Plus the top-level virtual network drivers (veth, ifb, tun, dummy, ...).
ROOTFS_MODULE_TOPLEVEL_DIRS = ("kernel/drivers/net/",)

# Loaded by the initramfs, in dependency order, before the root is mounted.
INITRAMFS_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "9pnet_virtio",
    "9p",
)

# /init of the initramfs (busybox sh). It mounts the root image and the
# per-run 9p share, then hands PID 1 to the runner that run.py put there.
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/printk
trace() { case " $(cat /proc/cmdline) " in *" testbed.trace "*) echo "testbed-init: $(cut -d' ' -f1 /proc/uptime) $*";; esac; }
fail() { echo "testbed-init: $*"; echo o > /proc/sysrq-trigger; poweroff -f; }
trace start
for m in $(cat /lib/modules/load.order); do
    insmod "/lib/modules/$m" || fail "insmod $m failed"
    trace "insmod $m"
done
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no /dev/vda"; sleep 0.05
done
trace "have /dev/vda"
mkdir -p /newroot
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount root"
mkdir -p /newroot/testbed
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 testbed-run /newroot/testbed \
    || fail "cannot mount the run share"
trace "mounted root and run share"
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /usr/bin/python3 -I /testbed/guest_init.py
"""


def log(msg: str) -> None:
    print(f"[guest-build] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv, fail loudly with its output."""
    proc = subprocess.run(argv, text=True, capture_output=True, **kw)
    if proc.returncode != 0:
        raise BuildError(
            f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc


class BuildError(PreflightError):
    """The guest could not be built (a tool, the mirror, a package)."""


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# apt mirror discovery: read it from this machine's apt configuration.


def _deb822_stanzas(text: str):
    stanza: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza = {}
            continue
        if line[0].isspace() and stanza:
            continue  # continuation lines (e.g. inline keys): not needed here
        key, _, value = line.partition(":")
        stanza[key.strip().lower()] = value.strip()


def find_mirror(suite: str = SUITE) -> tuple[str, str | None]:
    """Return (URI, keyring or None) of an enabled Debian 'main' source for suite."""
    apt_dir = Path("/etc/apt")
    candidates: list[tuple[str, str | None]] = []
    files = [apt_dir / "sources.list"] + sorted((apt_dir / "sources.list.d").glob("*"))
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for st in _deb822_stanzas(text):
                if st.get("enabled", "yes").lower() == "no":
                    continue
                if "deb" not in st.get("types", "").split():
                    continue
                if suite not in st.get("suites", "").split():
                    continue
                if "main" not in st.get("components", "").split():
                    continue
                for uri in st.get("uris", "").split():
                    candidates.append((uri, st.get("signed-by")))
        elif f.name == "sources.list" or f.suffix == ".list":
            for line in text.splitlines():
                m = re.match(r"\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.*)", line)
                if not m or m.group(3) != suite or "main" not in m.group(4).split():
                    continue
                opts = m.group(1) or ""
                km = re.search(r"signed-by=(\S+?)\]?(\s|$)", opts)
                candidates.append((m.group(2), km.group(1) if km else None))
    # Prefer a plain Debian archive over e.g. a security or ports mirror.
    for uri, key in candidates:
        if "security" not in uri:
            return uri.rstrip("/"), key if key and key.startswith("/") else None
    raise BuildError(
        f"no enabled 'deb ... {suite} main' source in /etc/apt/sources.list*; "
        "pass --mirror URL or set TESTBED_GUEST_MIRROR"
    )


# --------------------------------------------------------------------------
# Cache bookkeeping: each artefact has a key file; rebuild when it differs.


@dataclasses.dataclass
class Artefact:
    path: Path
    key: str

    @property
    def keyfile(self) -> Path:
        return self.path.with_name(self.path.name + ".key")

    def fresh(self) -> bool:
        return self.path.exists() and self.keyfile.exists() and self.keyfile.read_text() == self.key

    def mark(self) -> None:
        self.keyfile.write_text(self.key)

    def invalidate(self) -> None:
        self.keyfile.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# --------------------------------------------------------------------------
# Kernel


def kernel_dir(cache: Path) -> Path:
    return cache / "kernel"


def kernel_version(kdir: Path) -> str:
    versions = sorted(p.name for p in (kdir / "lib/modules").iterdir())
    if len(versions) != 1:
        raise BuildError(f"expected one kernel in {kdir}/lib/modules, found {versions}")
    return versions[0]


def image_package_of_meta(tmp: str) -> str:
    """The versioned image package Debian's meta package depends on (downloaded into tmp)."""
    run(["apt-get", "download", KERNEL_META_PACKAGE], cwd=tmp)
    (meta,) = Path(tmp).glob(f"{KERNEL_META_PACKAGE}_*.deb")
    depends = run(["dpkg-deb", "-f", str(meta), "Depends"]).stdout
    m = re.search(r"(linux-image-\d[^\s,(]*-amd64)", depends)
    if not m:
        raise BuildError(f"cannot find the image package in {KERNEL_META_PACKAGE} Depends: {depends!r}")
    return m.group(1)


def build_kernel(cache: Path, package: str | None = None) -> Artefact:
    """The image package (``package``, or the one the meta package names) extracted."""
    kdir = kernel_dir(cache)
    art = Artefact(kdir, f"kernel-v1:{package}" if package else "kernel-v1")
    if art.fresh():
        log(f"kernel: cached ({kernel_version(kdir)})")
        return art
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache, prefix="kernel-dl-") as tmp:
        image_pkg = package or image_package_of_meta(tmp)
        log(f"kernel: downloading {image_pkg}")
        run(["apt-get", "download", image_pkg], cwd=tmp)
        (deb,) = Path(tmp).glob(f"{image_pkg}_*.deb")
        staging = cache / "kernel.tmp"
        _remove(staging)
        run(["dpkg-deb", "-x", str(deb), str(staging)])
    version = kernel_version(staging)
    run(["depmod", "-b", str(staging), version])
    _remove(kdir)
    staging.rename(kdir)
    art.mark()
    log(f"kernel: {version} extracted and depmod'ed in {time.monotonic() - t0:.1f} s")
    return art


def vmlinuz(cache: Path) -> Path:
    kdir = kernel_dir(cache)
    return kdir / "boot" / f"vmlinuz-{kernel_version(kdir)}"


def build_vmlinux(cache: Path, kernel: Artefact) -> Artefact:
    """The uncompressed kernel ELF, booted through its PVH entry point.

    Debian's bzImage is xz-compressed; decompressing ~65 MB under TCG took
    3-4 s of every boot. QEMU boots the ELF directly (CONFIG_PVH=y), so we
    decompress it once here (xz, gzip: the stdlib; zstd, 6.12: the zstd tool).
    """
    out = cache / "vmlinux"
    src = vmlinuz(cache)
    art = Artefact(out, digest("vmlinux-v1", src.name, str(src.stat().st_size)))
    if art.fresh():
        log("vmlinux: cached")
        return art
    art.invalidate()
    t0 = time.monotonic()
    elf = find_elf(src.read_bytes())
    if elf is None:
        raise BuildError(f"no xz/gzip/zstd-compressed ELF kernel found in {src}"
                         + ("" if shutil.which("zstd") else " (zstd not installed: Debian's "
                            "6.12 kernels are zstd-compressed; apt-get install zstd)"))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)
    art.mark()
    log(f"vmlinux: {len(elf) >> 20} MiB ELF extracted in {time.monotonic() - t0:.1f} s")
    return art


def _unzstd(data: bytes) -> bytes:
    """The first zstd frame of ``data`` (the stdlib has no zstd before 3.14: the zstd tool;
    it complains about the bytes after the frame, which are not ours to decode)."""
    if not shutil.which("zstd"):
        return b""
    return subprocess.run(["zstd", "-dcq"], input=data, capture_output=True).stdout


DECOMPRESSORS = (
    (b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(b)),
    (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b)),
    (b"\x28\xb5\x2f\xfd", _unzstd),
)


def find_elf(data: bytes) -> bytes | None:
    """The ELF kernel compressed inside a bzImage (6.1: xz; 6.12: zstd), or None."""
    for magic, decompress in DECOMPRESSORS:
        at = data.find(magic)
        while at >= 0:
            try:
                cand = decompress(data[at:])
                if cand[:4] == b"\x7fELF":
                    return cand
            except (lzma.LZMAError, zlib.error):
                pass
            at = data.find(magic, at + 1)
    return None


def _modules_dep(moddir: Path) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    return deps


def _module_index(deps: dict[str, list[str]]) -> dict[str, str]:
    """Module name (dashes as underscores) -> path relative to the module dir."""
    index = {}
    for path in deps:
        name = Path(path).name.split(".ko")[0].replace("-", "_")
        index[name] = path
    return index


def _load_order(names, deps: dict[str, list[str]], builtin: set[str]) -> list[str]:
    index = _module_index(deps)
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in deps[path]:
            visit(d)
        order.append(path)

    for name in names:
        key = name.replace("-", "_")
        if key in index:
            visit(index[key])
        elif key not in builtin:
            raise BuildError(f"module {name} is neither a module nor built in")
    return order


def _builtin_modules(moddir: Path) -> set[str]:
    f = moddir / "modules.builtin"
    if not f.exists():
        return set()
    return {Path(l).name.split(".ko")[0].replace("-", "_") for l in f.read_text().split()}


# --------------------------------------------------------------------------
# Root filesystem


def build_base(base: Path, mirror: str | None, packages: tuple[str, ...]) -> Artefact:
    """debootstrap'ed, slimmed root without kernel modules: shared by every kernel."""
    rdir = base / "rootfs"
    art = Artefact(rdir, digest("base-v1", SUITE, ",".join(packages)))
    if art.fresh():
        log("base root: cached")
        return art
    art.invalidate()
    if os.geteuid() != 0:
        raise BuildError("building the guest root needs root (debootstrap, mkfs.ext4 -d keeping ownership)")
    keyring = None
    if not mirror:
        mirror, keyring = find_mirror()
    t0 = time.monotonic()
    base.mkdir(parents=True, exist_ok=True)
    staging = base / "rootfs.tmp"
    _remove(staging)
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}"]
    if keyring and Path(keyring).exists():
        argv.append(f"--keyring={keyring}")
    argv += [SUITE, str(staging), mirror]
    log(f"base root: debootstrap {SUITE} from {mirror} (about 40 s)")
    run(argv)
    # Slim: docs, man pages, locales and the apt lists are not needed.
    for sub in ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt", "var/lib/apt/lists"):
        p = staging / sub
        if p.exists():
            shutil.rmtree(p)
            p.mkdir()
    (staging / "etc/hostname").write_text("testbed-guest\n")
    for d in ("testbed", "project", "site-packages", "out"):
        (staging / d).mkdir(exist_ok=True)
    _remove(rdir)
    staging.rename(rdir)
    art.mark()
    log(f"base root: {time.monotonic() - t0:.1f} s")
    return art


def build_rootfs(cache: Path, base: Artefact, kernel: Artefact) -> Artefact:
    """The shared base root plus this kernel's network/fs/virtio modules."""
    rdir = cache / "rootfs"
    version = kernel_version(kernel.path)
    art = Artefact(rdir, digest("rootfs-v2", base.key, version, *ROOTFS_MODULE_PREFIXES))
    if art.fresh():
        log("rootfs: cached")
        return art
    art.invalidate()
    t0 = time.monotonic()
    staging = cache / "rootfs.tmp"
    _remove(staging)
    run(["cp", "-a", "--reflink=auto", str(base.path), str(staging)])  # keeps owners and device nodes
    _install_modules(kernel.path, staging, version)
    _remove(rdir)
    staging.rename(rdir)
    art.mark()
    log(f"rootfs: base copied and modules installed in {time.monotonic() - t0:.1f} s")
    return art


def _install_modules(kdir: Path, root: Path, version: str) -> None:
    src = kdir / "lib/modules" / version
    deps = _modules_dep(src)
    wanted = set()
    for path in deps:
        if path.startswith(ROOTFS_MODULE_PREFIXES):
            wanted.add(path)
        for top in ROOTFS_MODULE_TOPLEVEL_DIRS:
            if path.startswith(top) and "/" not in path[len(top):]:
                wanted.add(path)
    closure = set(wanted)
    for path in wanted:
        closure.update(deps[path])
    dst = root / "lib/modules" / version
    _remove(dst)
    dst.mkdir(parents=True)
    for path in sorted(closure):
        (dst / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / path, dst / path)
    for f in src.glob("modules.builtin*"):
        shutil.copy2(f, dst / f.name)
    shutil.copy2(src / "modules.order", dst / "modules.order")
    run(["depmod", "-b", str(root), version])


def build_image(cache: Path, rootfs: Artefact) -> Artefact:
    img = cache / "rootfs.ext4"
    art = Artefact(img, digest("image-v1", rootfs.key))
    if art.fresh():
        log(f"rootfs.ext4: cached ({img.stat().st_size >> 20} MiB apparent)")
        return art
    art.invalidate()
    t0 = time.monotonic()
    used = int(run(["du", "-s", "--block-size=1M", str(rootfs.path)]).stdout.split()[0])
    size_mb = int(used * 1.3) + 256  # room for what the guest writes (snapshot=on discards it)
    tmp = img.with_name("rootfs.ext4.tmp")
    tmp.unlink(missing_ok=True)
    run([
        "mkfs.ext4", "-q", "-F", "-L", "testbed-root", "-O", "^has_journal",
        "-E", "lazy_itable_init=1", "-d", str(rootfs.path), str(tmp), f"{size_mb}M",
    ])
    tmp.rename(img)
    art.mark()
    log(f"rootfs.ext4: {size_mb} MiB image ({used} MiB used) in {time.monotonic() - t0:.1f} s")
    return art


# --------------------------------------------------------------------------
# Initramfs: a newc cpio written here, so no cpio binary is needed.


class Cpio:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        namez = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(namez), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(namez)
        self.buf.write(b"\0" * (-(110 + len(namez)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def find_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        # A dynamically linked busybox names its ELF interpreter; it cannot run alone in the initramfs.
        if p.exists() and b"/ld-linux" not in p.read_bytes()[:4096]:
            return p
    raise BuildError("static busybox not found: apt-get install busybox-static")


def build_initramfs(cache: Path, kernel: Artefact) -> Artefact:
    out = cache / "initramfs.cpio.gz"
    version = kernel_version(kernel.path)
    busybox = find_busybox()
    art = Artefact(out, digest("initramfs-v1", version, INIT_SCRIPT, *INITRAMFS_MODULES, str(busybox.stat().st_size)))
    if art.fresh():
        log("initramfs: cached")
        return art
    art.invalidate()
    t0 = time.monotonic()
    moddir = kernel.path / "lib/modules" / version
    order = _load_order(INITRAMFS_MODULES, _modules_dep(moddir), _builtin_modules(moddir))
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    names = []
    for path in order:
        name = Path(path).name
        cpio.file(f"lib/modules/{name}", (moddir / path).read_bytes())
        names.append(name)
    cpio.file("lib/modules/load.order", ("\n".join(names) + "\n").encode())
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6))
    tmp.rename(out)
    art.mark()
    log(f"initramfs: {len(names)} modules, {out.stat().st_size >> 10} KiB in {time.monotonic() - t0:.1f} s")
    return art


# --------------------------------------------------------------------------


@dataclasses.dataclass
class Guest:
    kernel: Path
    initramfs: Path
    image: Path
    kernel_version: str


def cache_dir(arg: str | None = None) -> Path:
    return Path(arg or os.environ.get("TESTBED_GUEST_CACHE") or DEFAULT_CACHE).resolve()


def ensure(cache: Path, mirror: str | None = None, force: bool = False, *,
           package: str | None = None, base: Path | None = None) -> Guest:
    """Build whatever is missing and return the paths to boot.

    ``package``: the kernel image package (default: what linux-image-amd64 depends on);
    ``base``: where the shared debootstrap'ed root lives (default ``cache/base``).
    """
    missing = [t for t in ("apt-get", "dpkg-deb", "depmod", "debootstrap", "mkfs.ext4", "du", "cp") if not shutil.which(t)]
    if missing:
        raise BuildError(f"missing tools {missing}: apt-get install $(cat {APT_PACKAGES_FILE})")
    cache.mkdir(parents=True, exist_ok=True)
    base = base or cache / "base"
    base.mkdir(parents=True, exist_ok=True)
    # One builder at a time per base (parallel CI jobs, run.py racing build.py, two kernels).
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(cache, base, mirror, force, package)


def _ensure_locked(cache: Path, base_dir: Path, mirror: str | None, force: bool,
                   package: str | None) -> Guest:
    if force:
        for name in ("kernel", "vmlinux", "rootfs", "rootfs.ext4", "initramfs.cpio.gz"):
            Artefact(cache / name, "").invalidate()
        Artefact(base_dir / "rootfs", "").invalidate()
    t0 = time.monotonic()
    mirror = mirror or os.environ.get("TESTBED_GUEST_MIRROR") or None
    kernel = build_kernel(cache, package)
    vmlinux = build_vmlinux(cache, kernel)
    base = build_base(base_dir, mirror, ROOTFS_PACKAGES)
    rootfs = build_rootfs(cache, base, kernel)
    image = build_image(cache, rootfs)
    initramfs = build_initramfs(cache, kernel)
    log(f"ready in {time.monotonic() - t0:.1f} s (cache {cache})")
    return Guest(vmlinux.path, initramfs.path, image.path, kernel_version(kernel.path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help=f"cache directory (env TESTBED_GUEST_CACHE, default {DEFAULT_CACHE})")
    ap.add_argument("--base", help="directory of the shared base root (default CACHE/base)")
    ap.add_argument("--package", help="kernel image package (default: what linux-image-amd64 depends on)")
    ap.add_argument("--mirror", help="Debian mirror URL (default: read from /etc/apt/sources.list*)")
    ap.add_argument("--force", action="store_true", help="rebuild every artefact")
    args = ap.parse_args(argv)
    try:
        guest = ensure(cache_dir(args.cache), args.mirror, args.force, package=args.package,
                       base=Path(args.base).resolve() if args.base else None)
    except BuildError as e:
        print(f"guest build failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(dataclasses.asdict(guest), default=str, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
