"""vagrant/provision.sh for real, in a chroot of a Debian bookworm root (root, slow).

The root is a copy of the one ``vagrant/guest/build.py`` caches (a
debootstrap minbase); the test is skipped when that cache is absent rather
than spending ~40 s on debootstrap. The script installs apt packages and
pip-installs a copy of the checkout, so it needs the Debian mirror and PyPI
(skipped, with the reason, when they are unreachable). Everything runs in a
private mount namespace (proc and dev mounted there vanish with it) and the
copy is deleted afterwards. Debian has no linux-modules-extra: the script
must skip that step and say so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TESTBED_GUEST_CACHE", REPO / "vagrant/guest/cache"))
pytestmark = [pytest.mark.root, pytest.mark.slow]


def _reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


def test_provision_installs_testbed_in_a_debian_chroot(tmp_path):
    rootfs = CACHE / "rootfs"
    if not (rootfs / "usr/bin/python3").exists():
        pytest.skip(f"no cached Debian root at {rootfs} (python3 vagrant/guest/build.py makes it)")
    if not (_reachable("deb.debian.org", 80) and _reachable("pypi.org", 443)):
        pytest.skip("the Debian mirror or PyPI is unreachable: provision.sh installs from them")
    root = tmp_path / "root"
    t0 = time.monotonic()
    subprocess.run(["cp", "-a", "--reflink=auto", str(rootfs), str(root)], check=True)
    project = root / "project"
    for item in ("pyproject.toml", "README.md", "testbed", "vagrant/provision.sh",
                 "workloads", "topologies"):
        src = REPO / item
        dst = project / item
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    # the chroot uses this machine's network, so it trusts what this machine trusts (an
    # egress proxy's CA, say): ca-certificates picks these up when provision.sh installs it
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        shutil.copytree(local_cas, root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
    script = (f"mount -t proc proc {root}/proc && mount --rbind /dev {root}/dev && "
              f"exec chroot {root} /bin/bash /project/vagrant/provision.sh "
              "--project /project --skip-doctor")
    try:
        p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                           capture_output=True, text=True, timeout=240)
        elapsed = time.monotonic() - t0
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert "no linux-modules-extra step" in p.stdout
        assert "linux-modules-extra" not in "".join(l for l in p.stdout.splitlines(True)
                                                   if l.startswith("+ apt-get install"))
        for binary in ("usr/bin/iperf3", "usr/bin/tcpdump", "usr/sbin/ethtool", "usr/sbin/nft"):
            assert (root / binary).exists(), binary
        wrapper = root / "usr/local/bin/testbed"
        assert os.access(wrapper, os.X_OK)
        v = subprocess.run(["chroot", str(root), "/usr/local/bin/testbed", "--version"],
                           capture_output=True, text=True, timeout=60)
        assert v.stdout.strip() == "testbed 0.1.0", v.stderr
        # the installed copy is the venv's, not the project directory
        found = subprocess.run(["chroot", str(root), "/opt/testbed/venv/bin/python", "-c",
                                "import testbed; print(testbed.__file__)"],
                               capture_output=True, text=True, timeout=60)
        assert found.stdout.startswith("/opt/testbed/venv/"), found
        print(f"provision.sh in a Debian chroot: {elapsed:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)
