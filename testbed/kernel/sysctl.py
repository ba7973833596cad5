"""Kernel parameters under /proc/sys: read, write, and the congestion controls
the kernel offers. Keys are written with dots (``net.ipv4.ip_forward``); the
file read is that of the network namespace the calling thread is in."""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")


def sysctl_path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def write_sysctl(key: str, value: str) -> None:
    sysctl_path(key).write_text(value)


def read_sysctl(key: str) -> str:
    return sysctl_path(key).read_text().strip()


def read_sysctl_or_none(key: str) -> str | None:
    """The value, or None where this kernel (or namespace) has no such key."""
    try:
        return read_sysctl(key)
    except OSError:
        return None


def available_ccs() -> list[str]:
    """The congestion controls this kernel offers now (empty if it cannot be read)."""
    value = read_sysctl_or_none("net.ipv4.tcp_available_congestion_control")
    return value.split() if value is not None else []
