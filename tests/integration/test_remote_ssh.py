"""``testbed --host``: a real OpenSSH server inside a testbed namespace (root).

The server (``/usr/sbin/sshd -D`` with its own config, host key and
authorized_keys in a temp dir; the system sshd and /root/.ssh are never
touched) runs in h2 of a two-host topology; the CLI runs as a subprocess in
h1 and reaches it over the testbed's own link. The "remote" is this machine,
so the remote testbed builds its own namespaces under another instance name.

sshd joins only h2's network namespace (nsenter --net), not the private
mount namespace ``Node.popen`` gives: the remote testbed it starts must see
and mount /run/netns like any testbed on that host.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import testbed

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"),
                                 reason="needs openssh-server (tests/apt-packages.txt)"),
              pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")]
pytest.importorskip("paramiko")

PORT = 2222
TOPOLOGY = """\
name: sshpair
nodes:
  h1: {kind: host}
  h2: {kind: host}
links:
  - endpoints: [h1, h2]
"""
WORKLOAD = """\
name: remote-tiny
topology: topo.yaml
duration: {duration}s
flows:
  - {{name: f1, from: a, to: b, cc: cubic, driver: builtin}}
"""
WORKLOAD_TOPOLOGY = """\
name: rtiny
nodes:
  a: {kind: host}
  b: {kind: host}
links:
  - endpoints: [a, b]
    rate: 20mbit
    delay: 2ms
"""


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "testbed-test",
                    "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


class Server:
    """sshd in h2 plus what a client needs to reach it."""

    def __init__(self, net, home: Path, ip: str, proc: subprocess.Popen, host_pub: str,
                 client_key: Path, log: Path) -> None:
        self.net, self.home, self.ip, self.proc = net, home, ip, proc
        self.host_pub, self.client_key, self.log = host_pub, client_key, log

    @property
    def spec(self) -> str:
        return f"root@{self.ip}:{PORT}"

    def known_hosts(self, path: Path, pub: str | None = None) -> Path:
        kind, b64 = (pub or self.host_pub).split()[:2]
        path.write_text(f"[{self.ip}]:{PORT} {kind} {b64}\n")
        return path

    def cli(self, *args: str, known_hosts: Path, timeout: float = 120,
            popen: bool = False, extra: tuple[str, ...] = ()):
        """Run the CLI in h1 against this server: (returncode, stdout, stderr) or a Popen."""
        argv = [sys.executable, "-m", "testbed", "--host", self.spec,
                "--known-hosts", str(known_hosts), "--identity", str(self.client_key),
                "--ssh-config", os.devnull, *extra, *args]
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        env["HOME"] = str(self.home)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
        if popen:
            return self.net["h1"].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=env, cwd=str(self.home))
        proc = self.net["h1"].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=env, cwd=str(self.home))
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, out, err

    def kill(self) -> None:
        """The host 'disappears': every sshd process of ours ends at once (SIGKILL)."""
        try:
            daemon = psutil.Process(self.proc.pid)
            sessions = [c for c in daemon.children(recursive=True)
                        if c.exe() == "/usr/sbin/sshd"]
        except psutil.NoSuchProcess:
            return
        for p in [daemon, *sessions]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("sshd")
    os.chmod(work, 0o700)
    host_pub = _keygen(work / "host_ed25519")
    client_pub = _keygen(work / "client_ed25519")
    (work / "authorized_keys").write_text(client_pub + "\n")
    home = work / "home"
    home.mkdir()
    topo = work / "pair.yaml"
    topo.write_text(TOPOLOGY)
    created_privsep = not os.path.isdir("/run/sshd")
    if created_privsep:
        os.makedirs("/run/sshd", mode=0o755)
    name = f"ssh{secrets.token_hex(3)}"
    try:
        with testbed.up(topo, name=name) as net:
            ip = net["h2"].ipv4
            cfg = work / "sshd_config"
            cfg.write_text(f"""\
ListenAddress {ip}:{PORT}
HostKey {work}/host_ed25519
AuthorizedKeysFile {work}/authorized_keys
PidFile none
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
            log = work / "sshd.log"
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{net['h2'].netns}", "/usr/sbin/sshd", "-D", "-e",
                 "-f", str(cfg)], stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
            net.record_process(proc.pid)
            deadline = time.monotonic() + 10
            while True:
                with net["h1"].enter():
                    try:
                        socket.create_connection((ip, PORT), timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise AssertionError(f"sshd did not start: {log.read_text()}")
                time.sleep(0.1)
            srv = Server(net, home, ip, proc, host_pub, work / "client_ed25519", log)
            yield srv
            srv.kill()
    finally:
        if created_privsep:
            shutil.rmtree("/run/sshd", ignore_errors=True)


@pytest.fixture
def fresh_server(server):
    """The server, restarted if an earlier test killed it."""
    if server.proc.poll() is not None:
        pytest.skip("the server was killed by an earlier test")
    return server


def _remote_opts(tmp_path: Path) -> tuple[str, ...]:
    bindir = Path(sys.executable).parent
    return ("--remote-testbed", str(bindir / "testbed"), "--remote-python", sys.executable,
            "--remote-dir", str(tmp_path / "remote"))


def _no_namespaces(prefix: str) -> bool:
    return not any(n.startswith(prefix) for n in os.listdir("/run/netns")) \
        if os.path.isdir("/run/netns") else True


def test_unknown_host_key_is_refused_then_trusted_explicitly_and_doctor_runs(fresh_server, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    rc, out, err = fresh_server.cli("doctor", known_hosts=kh, extra=_remote_opts(tmp_path))
    assert rc == 6, err
    assert "host key" in err and "unknown" in err and "--trust-new-host-key" in err
    assert kh.read_text() == "", "an unknown key must not be recorded silently"

    rc, out, err = fresh_server.cli("doctor", known_hosts=kh,
                                    extra=("--trust-new-host-key", *_remote_opts(tmp_path)))
    assert rc == 0, err
    assert "recorded new host key" in err
    assert fresh_server.host_pub.split()[1] in kh.read_text()
    assert "[ok  ] privileges" in out and "congestion control" in out

    rc, out, err = fresh_server.cli("doctor", known_hosts=kh, extra=_remote_opts(tmp_path))
    assert rc == 0, err  # now known: no option needed
    assert "recorded" not in err


def test_host_key_mismatch_is_refused_even_with_trust_option(fresh_server, tmp_path):
    other = _keygen(tmp_path / "other_key")
    kh = fresh_server.known_hosts(tmp_path / "known_hosts", other)
    before = kh.read_text()
    rc, out, err = fresh_server.cli("doctor", known_hosts=kh,
                                    extra=("--trust-new-host-key", *_remote_opts(tmp_path)))
    assert rc == 6
    assert "HOST KEY MISMATCH" in err
    assert kh.read_text() == before


def test_auth_failure_and_connection_refused_are_one_clear_line(fresh_server, tmp_path):
    kh = fresh_server.known_hosts(tmp_path / "known_hosts")
    stranger = tmp_path / "stranger"
    _keygen(stranger)
    argv = [sys.executable, "-m", "testbed", "--host", fresh_server.spec, "--known-hosts", str(kh),
            "--identity", str(stranger), "--ssh-config", os.devnull, "status"]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(fresh_server.home)
    p = fresh_server.net["h1"].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 6
    assert "authentication as root" in err and err.count("\n") == 1, err

    refused = fresh_server.spec.replace(f":{PORT}", ":2299")
    argv[argv.index(fresh_server.spec)] = refused
    argv[argv.index(str(stranger))] = str(fresh_server.client_key)
    p = fresh_server.net["h1"].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 6
    assert "connection refused" in err and err.count("\n") == 1, err


def _write_workload(tmp_path: Path, duration: int) -> Path:
    d = tmp_path / "wl"
    d.mkdir()
    (d / "topo.yaml").write_text(WORKLOAD_TOPOLOGY)
    wl = d / "tiny.yaml"
    wl.write_text(WORKLOAD.format(duration=duration))
    return wl


@pytest.mark.slow
def test_remote_run_brings_results_home_and_leaves_nothing(fresh_server, tmp_path):
    kh = fresh_server.known_hosts(tmp_path / "known_hosts")
    wl = _write_workload(tmp_path, 2)
    inst = f"rr{secrets.token_hex(2)}"
    out_dir = tmp_path / "results"
    t0 = time.monotonic()
    rc, out, err = fresh_server.cli("run", str(wl), "--output", str(out_dir), "--name", inst,
                                    known_hosts=kh, extra=_remote_opts(tmp_path))
    elapsed = time.monotonic() - t0
    assert rc == 0, err
    assert "testbed doctor" in err and "[ok  ] privileges" in err   # the remote check, shown
    assert "bringing up" in err                                     # progress streamed back
    dirs = [Path(line) for line in out.split()]
    assert len(dirs) == 1 and dirs[0].parent == out_dir / "remote-tiny", out
    result = json.loads((dirs[0] / "result.json").read_text())
    assert result["status"] == "complete", result
    assert result["flows"][0]["ok"]
    remote = json.loads((dirs[0] / "remote.json").read_text())
    assert remote["host"] == fresh_server.spec and remote["instance"] == inst
    assert not remote["connection_lost"]
    assert _no_namespaces(f"tb-{inst}-")
    sessions = tmp_path / "remote" / "sessions"
    assert not sessions.exists() or not any(sessions.iterdir()), "remote session dir not removed"
    print(f"remote run of a 2 s workload took {elapsed:.1f} s")


SWEEP = """\
name: remote-sweep
topology: topo.yaml
duration: 2s
matrix:
  cc: [cubic, bbr]
flows:
  - {name: f1, from: a, to: b, cc: "{{ cc }}", driver: builtin}
"""


@pytest.mark.slow
def test_sweep_over_two_hosts_merges_results(fresh_server, tmp_path):
    kh = fresh_server.known_hosts(tmp_path / "known_hosts")
    d = tmp_path / "wl"
    d.mkdir()
    (d / "topo.yaml").write_text(WORKLOAD_TOPOLOGY)
    (d / "sweep.yaml").write_text(SWEEP)
    hosts = tmp_path / "hosts.yaml"
    # two "hosts": the same server reached twice (one experiment per connection at a time)
    hosts.write_text(f"hosts:\n  - {fresh_server.spec}\n  - {fresh_server.spec}\n")
    out_dir = tmp_path / "results"
    argv = [sys.executable, "-m", "testbed", "run", str(d / "sweep.yaml"), "--output", str(out_dir),
            "--hosts", str(hosts), "--known-hosts", str(kh), "--identity",
            str(fresh_server.client_key), "--ssh-config", os.devnull, *_remote_opts(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(fresh_server.home)
    p = fresh_server.net["h1"].popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    dirs = [Path(line) for line in out.split()]
    assert len(dirs) == 2 and {x.parent for x in dirs} == {out_dir / "remote-sweep"}, out
    ccs = sorted(json.loads((x / "result.json").read_text())["variables"]["cc"] for x in dirs)
    assert ccs == ["bbr", "cubic"]
    assert all(json.loads((x / "result.json").read_text())["status"] == "complete" for x in dirs)
    assert f"[{fresh_server.spec}] testbed:" in err     # per-host progress, prefixed


@pytest.mark.slow
def test_server_killed_mid_run_is_a_clear_error_with_partial_record(server, tmp_path):
    if server.proc.poll() is not None:
        pytest.skip("server already gone")
    kh = server.known_hosts(tmp_path / "known_hosts")
    wl = _write_workload(tmp_path, 8)
    inst = f"rk{secrets.token_hex(2)}"
    out_dir = tmp_path / "results"
    proc = server.cli("run", str(wl), "--output", str(out_dir), "--name", inst,
                      known_hosts=kh, extra=_remote_opts(tmp_path), popen=True)
    try:
        deadline = time.monotonic() + 40
        while _no_namespaces(f"tb-{inst}-"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the remote run never brought its topology up"
            time.sleep(0.1)
        time.sleep(2.0)   # flows are running
        server.kill()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 6, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("testbed: error: connection to") and "lost" in last, err
    assert "could not reconnect" in last and f"down --name {inst}" in last
    records = list((out_dir / "remote-tiny").iterdir())
    assert len(records) == 1
    result = json.loads((records[0] / "result.json").read_text())
    assert result["status"] == "interrupted" and result["partial"] is True
    assert (records[0] / "remote.log").read_text()      # what was streamed is kept
    # the remote side noticed the dropped connection and tore its testbed down
    deadline = time.monotonic() + 30
    while not _no_namespaces(f"tb-{inst}-"):
        assert time.monotonic() < deadline, "the remote testbed was left running"
        time.sleep(0.2)
    from testbed.realize import state
    deadline = time.monotonic() + 10
    while state.instance_dir(inst).exists():
        assert time.monotonic() < deadline, "the remote testbed's state was left behind"
        time.sleep(0.2)
    # the remote's own run directory says it was interrupted
    remote_results = list((tmp_path / "remote" / "sessions").glob("*/results/remote-tiny/*"))
    assert len(remote_results) == 1
    deadline = time.monotonic() + 10
    while not (remote_results[0] / "result.json").exists():
        assert time.monotonic() < deadline, "the remote run wrote no result.json"
        time.sleep(0.2)
    remote_result = json.loads((remote_results[0] / "result.json").read_text())
    assert remote_result["status"] == "interrupted", remote_result
    shutil.rmtree(tmp_path / "remote")

