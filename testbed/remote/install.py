"""Which testbed runs on the remote, installing it there when needed.

In order: ``--remote-testbed PATH`` if given; a ``testbed`` on the remote
PATH whose ``--version`` equals ours; the virtualenv ``<remote-dir>/venv``
if it holds this very checkout (its wheel's hash is recorded next to it);
otherwise a wheel is built here from the checkout (pure python, no build
tools, no network), copied over and ``pip install``ed into that venv. The
venv sees the system's site-packages, so distribution packages
(python3-yaml, ...) count; pip fetches what is missing from the remote's
package index.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from testbed.remote.errors import RemoteUnfit
from testbed.remote.ssh import Connection
from testbed.version import __version__

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Wheel:
    filename: str
    data: bytes

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build_wheel(root: Path = PROJECT_ROOT) -> Wheel:
    """A py3-none-any wheel of the ``testbed`` package in ``root`` (its pyproject.toml)."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise RemoteUnfit(f"cannot install testbed on the remote: {root} is not a checkout "
                          "(no pyproject.toml); install testbed there yourself and pass "
                          "--remote-testbed PATH")
    project = tomllib.loads(pyproject.read_text())["project"]
    name, version = project["name"], __version__     # pyproject reads it from testbed.version
    dist_info = f"{name}-{version}.dist-info"
    files: list[tuple[str, bytes]] = []
    for path in sorted((root / "testbed").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            files.append((path.relative_to(root).as_posix(), path.read_bytes()))
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}",
            f"Summary: {project.get('description', '')}",
            f"Requires-Python: {project.get('requires-python', '>=3')}"]
    meta += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    scripts = project.get("scripts", {})
    files.append((f"{dist_info}/METADATA", ("\n".join(meta) + "\n").encode()))
    files.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: testbed.remote\n"
                  b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    files.append((f"{dist_info}/entry_points.txt", ("[console_scripts]\n" + "".join(
        f"{k} = {v}\n" for k, v in scripts.items())).encode()))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arcname, data in files:
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        writer.writerow([arcname, f"sha256={h}", len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    files.append((f"{dist_info}/RECORD", record.getvalue().encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in files:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    return Wheel(f"{name}-{version}-py3-none-any.whl", buf.getvalue())


def venv_commands(remote_dir: str, wheel_path: str, python: str = "python3",
                  pip_args: tuple[str, ...] = ()) -> list[list[str]]:
    """The argv lists that create the venv and install the wheel into it."""
    venv = f"{remote_dir}/venv"
    return [[python, "-m", "venv", "--system-site-packages", venv],
            [f"{venv}/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--force-reinstall", "--no-warn-script-location", *pip_args, wheel_path]]


def ensure_testbed(conn: Connection, remote_dir: str, *, explicit: str | None = None,
                   python: str = "python3", pip_args: tuple[str, ...] = (),
                   log=print) -> str:
    """The remote testbed executable to use, installing it if needed."""
    if explicit:
        rc, out, err = conn.simple([explicit, "--version"])
        if rc != 0:
            raise RemoteUnfit(f"--remote-testbed {explicit} does not run on {conn.target.label}: "
                              f"{(err or out).strip()[-300:]}")
        return explicit
    rc, out, _ = conn.simple([python, "-c", "import shutil; print(shutil.which('testbed') or '')"])
    if rc == 127 or (rc != 0 and not out):
        raise RemoteUnfit(f"{conn.target.label} has no {python}: install python3 (3.11 or newer) "
                          "there")
    on_path = out.strip()
    if on_path:
        rc, out, _ = conn.simple([on_path, "--version"])
        if rc == 0 and out.strip() == f"testbed {__version__}":
            return on_path
    wheel = build_wheel()
    venv_testbed = f"{remote_dir}/venv/bin/testbed"
    marker = f"{remote_dir}/venv/testbed-wheel.sha256"
    try:
        with conn.sftp.open(marker) as f:
            if f.read().decode().strip() == wheel.digest and conn.exists(venv_testbed):
                return venv_testbed
    except FileNotFoundError:
        pass
    log(f"testbed: installing testbed {__version__} from {PROJECT_ROOT} into "
        f"{remote_dir}/venv on {conn.target.label}")
    wheel_path = f"{remote_dir}/wheels/{wheel.filename}"
    conn.makedirs(f"{remote_dir}/wheels")
    with conn.sftp.open(wheel_path, "wb") as f:
        f.write(wheel.data)
    for argv in venv_commands(remote_dir, wheel_path, python, pip_args):
        rc, out, err = conn.simple(argv, timeout=600)
        if rc != 0:
            raise RemoteUnfit(f"installing testbed on {conn.target.label} failed at "
                              f"'{' '.join(argv[:4])} ...': {(err or out).strip()[-400:]} "
                              "(install it there yourself and pass --remote-testbed PATH)")
    with conn.sftp.open(marker, "w") as f:
        f.write(wheel.digest + "\n")
    return venv_testbed
