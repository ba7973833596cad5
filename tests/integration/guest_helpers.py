"""What the QEMU guest tests share: where the guest lives and whether it can be built here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "vagrant" / "guest"
TOOLS = ("qemu-system-x86_64", "debootstrap", "mkfs.ext4", "dpkg-deb", "apt-get", "depmod")


def missing() -> str | None:
    """Why the guest cannot be built and booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, mkfs.ext4 -d)"
    lacking = [t for t in TOOLS if not shutil.which(t)]
    if not any(Path(p).exists() for p in ("/bin/busybox", "/usr/bin/busybox")):
        lacking.append("busybox (busybox-static)")
    if lacking:
        return f"missing {', '.join(lacking)}: apt-get install $(cat {GUEST / 'apt-packages.txt'})"
    return None


GUEST_MARKS = [pytest.mark.root, pytest.mark.slow,
               pytest.mark.skipif(missing() is not None, reason=str(missing()))]
