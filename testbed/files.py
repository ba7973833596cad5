"""Paths built from names, and files replaced whole: the two rules for what testbed
writes (as root) where a name it did not choose decides the path.

``contained(base, name)`` is the one check for a path made of a base directory and
a name (an instance, a workload, a run id, a file a remote host lists): the name is
one plain path component, and the path, symlinks resolved, stays inside ``base``.
It raises before anything is read, written or removed there.

``write_atomic(path, text)`` replaces a file so that a reader sees the old content
or the new, never part of one, and two writers never share a temporary file: a fresh
name in the same directory (mkstemp), fsync, rename.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from testbed.errors import ConfigError

NAME_MAX = 255          # bytes of one path component (Linux)


def plain_name_problem(name: object) -> str | None:
    """Why ``name`` is not one plain path component, or None when it is."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if name in (".", ".."):
        return f"{name!r} names a directory itself, not an entry in it"
    if "/" in name or "\0" in name:
        return "it holds '/' or a NUL byte"
    return None


def contained(base: Path, name: str, *, what: str = "name") -> Path:
    """``base / name``, refusing a ``name`` that is not one plain component or whose
    path (an existing symlink followed) would lead outside ``base``."""
    problem = plain_name_problem(name)
    if problem is None:
        path = base / name
        real_base = base.resolve()
        if real_base in path.resolve().parents:
            return path
        problem = f"it leads outside {base} (a symlink to {path.resolve()})"
    raise ConfigError(f"{what} {name!r} cannot be used as a name inside {base}: {problem}")


def write_atomic(path: Path, text: str, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new, whole.

    ``durable=False`` skips the fsync: still atomic for readers, but after a crash of
    the machine the file may hold the old content. For what lives no longer than the
    running system anyway (e.g. per-link records under /run, written thousands of
    times by one ``up``: 3 ms each on a disk-backed /run)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
