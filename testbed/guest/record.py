"""What a run directory records about the kernel it ran on, beyond ``uname``.

``testbed run`` writes ``manifest.json`` with ``kernel.release`` (uname -r of
wherever it ran: the host, or the guest). A run made with ``--kernel`` gets,
when it comes home, ``kernel.flavour`` (generic, cloud, rt), ``kernel.mode``
(host, kvm or tcg), ``kernel.config_hash`` (sha256 of the kernel's build
config, 16 hex digits; None when it cannot be read) and, for a guest,
``kernel.package`` and a ``guest.json`` saying how the guest was run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.guest.catalog import host_flavour
from testbed.results import write_json

MODES = ("host", "kvm", "tcg")


@dataclass(frozen=True)
class KernelRecord:
    """The manifest's ``kernel`` additions for one kernel choice."""

    flavour: str
    mode: str
    config_hash: str | None
    package: str | None = None


@dataclass(frozen=True)
class GuestRecord:
    """``guest.json``: how the guest that made a run was booted."""

    kernel: str            # the catalog name, 6.1.0-57-generic
    package: str
    release: str           # uname -r in the guest
    accel: str             # kvm or tcg
    vcpus: int
    memory_mib: int
    boot_s: float | None
    accel_note: str | None  # why not KVM, when TCG was used
    timed_out: bool = False  # killed at its timeout: its last run has no result.json


def config_hash(config: Path) -> str | None:
    """sha256 (16 hex digits) of a kernel config file, gzip'ed (/proc/config.gz) or not."""
    try:
        data = config.read_bytes()
    except OSError:
        return None
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return hashlib.sha256(data).hexdigest()[:16]


def host_record() -> KernelRecord:
    release = platform.release()
    found = [p for p in (Path(f"/boot/config-{release}"), Path("/proc/config.gz")) if p.exists()]
    return KernelRecord(flavour=host_flavour(release), mode="host",
                        config_hash=config_hash(found[0]) if found else None)


def annotate(run_dir: Path, kernel: KernelRecord, guest: GuestRecord | None = None) -> None:
    """Add ``kernel`` to the run's manifest.json (and write guest.json for a guest run)."""
    manifest_file = run_dir / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        manifest = {}  # a run that failed before its manifest: guest.json still says where
    else:
        manifest.setdefault("kernel", {}).update(
            {k: v for k, v in asdict(kernel).items() if v is not None or k == "config_hash"})
        write_json(manifest_file, manifest)
    if guest is not None:
        write_json(run_dir / "guest.json", asdict(guest))
