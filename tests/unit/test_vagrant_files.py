"""vagrant/: the Vagrantfile validates and provision.sh picks the right steps (no root, no VM).

We cannot boot a box here: ``vagrant validate --ignore-provider`` checks the
Vagrantfile without a provider plugin (skipped when vagrant is not
installed). provision.sh's choices are checked in ``--dry-run`` with a
fake os-release; the real install runs in
tests/integration/test_vagrant_provision.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "vagrant/provision.sh"


def _dry_run(tmp_path: Path, os_release: str, *args: str) -> subprocess.CompletedProcess:
    rel = tmp_path / "os-release"
    rel.write_text(os_release)
    env = dict(os.environ, TESTBED_OS_RELEASE=str(rel))
    return subprocess.run(["bash", str(PROVISION), "--dry-run", "--project", str(REPO), *args],
                          capture_output=True, text=True, env=env, timeout=30)


def _installed(stdout: str) -> list[str]:
    line = next(l for l in stdout.splitlines() if l.startswith("+ apt-get install"))
    return line.split()


def test_ubuntu_gets_linux_modules_extra_for_the_running_kernel(tmp_path):
    p = _dry_run(tmp_path, 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n')
    assert p.returncode == 0, p.stderr
    assert f"linux-modules-extra-{os.uname().release}" in _installed(p.stdout)
    assert "iperf3" in _installed(p.stdout) and "python3-venv" in _installed(p.stdout)
    assert f"+ /opt/testbed/venv/bin/pip install -q --disable-pip-version-check {REPO}" in p.stdout
    assert "+ /usr/local/bin/testbed doctor" in p.stdout


def test_debian_skips_modules_extra_and_says_why(tmp_path):
    p = _dry_run(tmp_path, "ID=debian\nVERSION_ID=12\n", "--skip-doctor", "--venv", "/v")
    assert p.returncode == 0, p.stderr
    assert not any(w.startswith("linux-modules-extra") for w in _installed(p.stdout))
    assert "no linux-modules-extra step" in p.stdout
    assert "+ /v/bin/pip install" in p.stdout and "doctor" not in p.stdout.replace(
        "--skip-doctor", "")


def test_other_distributions_and_bad_projects_are_refused(tmp_path):
    p = _dry_run(tmp_path, "ID=fedora\n")
    assert p.returncode == 1 and "neither Debian nor Ubuntu" in p.stderr
    p = subprocess.run(["bash", str(PROVISION), "--dry-run", "--project", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "not a testbed checkout" in p.stderr


def _validate(vagrant_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"), HOME=str(tmp_path),
               VAGRANT_CHECKPOINT_DISABLE="1")
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=vagrant_dir,
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed "
                    "(apt-get install vagrant)")
def test_vagrantfile_validates_and_a_broken_one_does_not(tmp_path):
    good = tmp_path / "good"          # a copy: vagrant writes .vagrant/ next to the Vagrantfile
    good.mkdir()
    for name in ("Vagrantfile", "provision.sh"):
        shutil.copy2(REPO / "vagrant" / name, good / name)
    p = _validate(good, tmp_path)
    if p.returncode != 0 and "ignore-provider" in p.stderr:
        pytest.skip(f"this vagrant cannot validate without a provider: {p.stderr.strip()[:200]}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "validated successfully" in p.stdout
    broken = tmp_path / "broken"
    broken.mkdir()
    text = (REPO / "vagrant/Vagrantfile").read_text()
    (broken / "Vagrantfile").write_text(text.replace("config.vm.hostname", "config.vm.hostnam"))
    (broken / "provision.sh").write_text("")
    p = _validate(broken, tmp_path)
    assert p.returncode != 0
    assert "hostnam" in p.stdout + p.stderr
