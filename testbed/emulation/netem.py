"""The ``netem`` backend (placeholder while the userspace backend is built)."""

from __future__ import annotations

import os
from pathlib import Path


def netem_available() -> tuple[bool, str]:
    """Whether the running kernel offers sch_netem, and why we think so (reads files only)."""
    release = os.uname().release
    if Path("/sys/module/sch_netem").exists():
        return True, f"sch_netem is loaded on kernel {release}"
    moddir = Path("/lib/modules") / release
    for name, how in (("modules.builtin", "built in"), ("modules.dep", "available as a module")):
        try:
            text = (moddir / name).read_text()
        except OSError:
            continue
        if "/sch_netem.ko" in text:
            return True, f"sch_netem is {how} on kernel {release}"
    return False, f"sch_netem is not available on kernel {release}"


class NetemBackend:
    name = "netem"
