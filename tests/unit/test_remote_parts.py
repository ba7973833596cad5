"""Remote hosts without a network: argv handling, quoting, ssh config, the wheel, the wrapper."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from testbed.cli import remote as cli_remote
from testbed.errors import ConfigError
from testbed.remote import argv as remote_argv
from testbed.remote import install, ssh
from testbed.remote.session import WORKLOAD_SLOT

paramiko = pytest.importorskip("paramiko")


@pytest.mark.parametrize("spec, expected", [
    ("vm", (None, "vm", None)),
    ("alice@vm", ("alice", "vm", None)),
    ("alice@10.0.0.2:2222", ("alice", "10.0.0.2", 2222)),
    ("bob@[fd00::2]:22", ("bob", "fd00::2", 22)),
    ("fd00::2", (None, "fd00::2", None)),
])
def test_parse_spec(spec, expected):
    assert ssh.parse_spec(spec) == expected


def test_ssh_config_alias_applies_like_openssh(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("Host lab\n  HostName 192.0.2.7\n  User tb\n  Port 2200\n"
                   "  IdentityFile ~/.ssh/lab_key\n  UserKnownHostsFile /x/known\n")
    t = ssh.resolve("lab", ssh_config=str(cfg))
    assert (t.hostname, t.user, t.port) == ("192.0.2.7", "tb", 2200)
    assert t.identity_files == (os.path.expanduser("~/.ssh/lab_key"),)
    assert t.known_hosts_read[0] == "/x/known" and t.known_hosts_write == "/x/known"
    assert t.hostkey_name == "[192.0.2.7]:2200"
    # what the user typed wins over the config
    t = ssh.resolve("root@lab:22", ssh_config=str(cfg), known_hosts="/k")
    assert (t.user, t.port, t.known_hosts_read) == ("root", 22, ("/k",))


def test_split_argv_takes_remote_options_anywhere_but_after_double_dash():
    opts, rest = cli_remote.split_argv(
        ["--host", "u@h", "--trust-new-host-key", "exec", "h1", "--", "x", "--host", "y"])
    assert opts.host == "u@h" and opts.trust_new_host_key
    assert rest == ["exec", "h1", "--", "x", "--host", "y"]
    opts, rest = cli_remote.split_argv(["run", "w.yaml", "--hosts=hosts.yaml", "--set", "a=1"])
    assert opts.hosts_file == "hosts.yaml" and rest == ["run", "w.yaml", "--set", "a=1"]
    assert cli_remote.wants_remote(["run", "w.yaml", "--hosts", "h.yaml"])
    assert not cli_remote.wants_remote(["exec", "h1", "--", "ssh", "--host", "x"])
    with pytest.raises(ConfigError):
        cli_remote.split_argv(["doctor", "--host"])


def test_run_argv_replaces_the_workload_and_drops_local_only_options():
    rest = ["-v", "run", "--set", "w.yaml=1", "w.yaml", "--output", "out", "--name=x", "--quiet"]
    argv = remote_argv.run_argv(rest, Path("w.yaml"))
    assert argv == ["-v", "run", "--set", "w.yaml=1", WORKLOAD_SLOT, "--quiet"]


def test_with_file_replaces_the_file_argument_not_an_option_value():
    rest = ["-v", "up", "--name", "t.yaml", "t.yaml", "--set", "a=1"]
    assert remote_argv.with_file(rest, "up", "t.yaml", "/r/t.yaml") == \
        ["-v", "up", "--name", "t.yaml", "/r/t.yaml", "--set", "a=1"]


def test_remote_commands_are_quoted_argv_never_shell_strings():
    evil = "x; rm -rf / $(id) 'q'"
    cmd = shlex.join(["testbed", "exec", "h1", "--", "echo", evil])
    assert shlex.split(cmd) == ["testbed", "exec", "h1", "--", "echo", evil]


def test_privileged_uses_sudo_n_for_non_root():
    conn = ssh.Connection(target=ssh.Target("u@h", "h", 22, "u"), client=None)
    conn._is_root = False
    assert conn.privileged(["testbed", "doctor"]) == ["sudo", "-n", "--", "testbed", "doctor"]
    conn._is_root = True
    assert conn.privileged(["testbed", "doctor"]) == ["testbed", "doctor"]


def test_the_sudoers_rule_names_the_interpreter_sudo_runs():
    assert ssh.sudoers_rule("alice") == "alice ALL=(root) NOPASSWD: /usr/bin/python3"
    assert ssh.sudoers_rule("bob", "/opt/py/bin/python3.12") == \
        "bob ALL=(root) NOPASSWD: /opt/py/bin/python3.12"


def test_fingerprint_matches_openssh_format():
    key = paramiko.Ed25519Key.from_private_key_file  # noqa: F841 (API exists)
    rsa = paramiko.RSAKey.generate(1024)
    fp = ssh.fingerprint(rsa)
    assert fp.startswith("SHA256:") and "=" not in fp and len(fp) == 7 + 43


def test_wheel_of_the_checkout_installs_and_runs(tmp_path):
    wheel = install.build_wheel()
    path = tmp_path / wheel.filename
    path.write_bytes(wheel.data)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert "testbed/cli/main.py" in names and "testbed/remote/ssh.py" in names
        assert not any("__pycache__" in n for n in names)
        meta = zf.read("testbed-0.1.0.dist-info/METADATA").decode()
        assert "Requires-Dist: pyroute2" in meta
    assert install.build_wheel().digest == wheel.digest   # reproducible: the venv is reused
    # install it with pip into a venv that borrows this interpreter's packages (no network)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; "
                           "print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import sysconfig
    Path(site, "borrow.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                          "install", "-q", "--no-deps", "--no-index", str(path)],
                         capture_output=True, text=True)
    if pip.returncode != 0 and "no such option: --python" in pip.stderr:
        pytest.skip("pip too old for --python")
    assert pip.returncode == 0, pip.stderr
    out = subprocess.run([str(venv / "bin/testbed"), "--version"], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.stdout.strip() == "testbed 0.1.0", out.stderr
    assert Path(site, "testbed", "cli", "main.py").exists()   # the wheel's copy, not the checkout


def test_install_commands_create_a_venv_and_pip_install_the_wheel():
    cmds = install.venv_commands("/home/u/.cache/testbed", "/home/u/.cache/testbed/wheels/t.whl")
    assert cmds[0] == ["python3", "-m", "venv", "--system-site-packages", "/home/u/.cache/testbed/venv"]
    assert cmds[1][0] == "/home/u/.cache/testbed/venv/bin/python"
    assert cmds[1][-1].endswith("t.whl")


def _wrapper(tmp_path: Path, script: str) -> subprocess.Popen:
    child = tmp_path / "child.py"
    child.write_text(script)
    return subprocess.Popen([sys.executable, "-c", ssh.WRAPPER, str(tmp_path / "pid"),
                             sys.executable, str(child)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


CHILD = """\
import signal, sys, time
def term(*_):
    print("cleaning up", flush=True)
    time.sleep(0.3)
    print("clean", flush=True)
    sys.exit(130)
signal.signal(signal.SIGTERM, term)
print("started", flush=True)
time.sleep(30)
"""


def test_wrapper_ends_the_command_gracefully_when_stdin_closes(tmp_path):
    proc = _wrapper(tmp_path, CHILD)
    assert proc.stdout.readline() == b"started\n"
    assert (tmp_path / "pid").read_text() == str(proc.pid)
    t0 = time.monotonic()
    proc.stdin.close()           # what a dropped SSH connection looks like to it
    out = proc.stdout.read()
    assert proc.wait(timeout=10) == 130
    assert out == b"cleaning up\nclean\n" and time.monotonic() - t0 < 5
    assert not (tmp_path / "pid").exists()


def test_wrapper_passes_exit_codes_and_a_stop_request(tmp_path):
    proc = _wrapper(tmp_path, "import sys; sys.stderr.write('e\\n'); sys.exit(3)")
    assert proc.wait(timeout=10) == 3      # stdin stays open, as over SSH
    assert proc.stderr.read() == b"e\n"
    proc.stdin.close()
    proc = _wrapper(tmp_path, CHILD)
    assert proc.stdout.readline() == b"started\n"
    proc.stdin.write(b"stop\n")
    proc.stdin.flush()
    assert proc.wait(timeout=10) == 130
    proc.stdin.close()


def test_hosts_file_and_per_point_argv(tmp_path):
    from testbed.remote import sweep
    from testbed.workload.matrix import RunPoint
    f = tmp_path / "hosts.yaml"
    f.write_text("hosts:\n  - alice@lab1\n  - lab2:2222\n")
    assert sweep.load_hosts(str(f)) == ["alice@lab1", "lab2:2222"]
    f.write_text("hosts: lab1\n")
    with pytest.raises(ConfigError):
        sweep.load_hosts(str(f))
    point = RunPoint(variables={"loss": "1%", "cc": "bbr"}, point={"cc": "bbr"}, repetition=1,
                     index=3)
    base = ["run", WORKLOAD_SLOT, "--repeat", "3", "--set", "loss=1%", "--shard", "1/2"]
    # the remote expands the same matrix (same --set and --repeat) and runs the one point,
    # so that its run records the sweep's matrix hash and the point's id and seed
    assert remote_argv.point_argv(base, point) == ["run", WORKLOAD_SLOT, "--repeat", "3",
                                                   "--set", "loss=1%", "--point", point.id]
    for env in (["--point-from-env"], ["--point-from-env", "MY_INDEX"], ["--point-from-env=I"]):
        assert remote_argv.point_argv(base + env + ["--shards", "2"], point) == \
            ["run", WORKLOAD_SLOT, "--repeat", "3", "--set", "loss=1%", "--point", point.id]


def test_a_sweep_over_hosts_queues_only_the_runs_the_selector_picks(tmp_path):
    from testbed.remote.workload import remote_run
    from testbed.workload.sharding import Selection
    wl = tmp_path / "wl.yaml"
    topo = Path(__file__).resolve().parents[2] / "topologies" / "dumbbell.yaml"
    wl.write_text(f"name: sel\ntopology: {topo}\n"
                  "matrix:\n  cc: [cubic, bbr, reno]\nrepeat: 2\n"
                  "flows:\n  - {from: h1, to: h3, cc: \"{{ cc }}\"}\n")
    rest = ["run", str(wl), "--shard", "2/4"]
    every = remote_run(rest, wl, variables={}, repeat=None, output=None, instance=None,
                       attached=False)
    mine = remote_run(rest, wl, variables={}, repeat=None, output=None, instance=None,
                      attached=False, selection=Selection(shard="2/4"))
    assert len(every.points) == 6
    n = len(every.points)      # shard 2 of 4: the second of four even blocks
    assert [p.index for p in mine.points] == list(range(n // 4, 2 * n // 4))
