"""SSH connections the way OpenSSH users expect, with paramiko.

``resolve`` turns ``user@host[:port]`` (or an alias from ``~/.ssh/config``:
HostName, User, Port, IdentityFile, UserKnownHostsFile, ProxyCommand) into
a ``Target``. ``Connection.open`` connects with host key checking: a key
not in known_hosts is refused unless ``trust_new`` is set (then it is
recorded, and said so), and a mismatch is always an error. Keys come from
the agent, ``~/.ssh/id_*`` and IdentityFile/``-i``.

Remote commands are argv lists joined with ``shlex.join`` (every argument
quoted; the remote login shell must be POSIX). ``Connection.run`` starts
them under ``WRAPPER``, a few lines of python that end the command
(SIGTERM, so testbed tears down) when the SSH channel's stdin closes, i.e.
when the connection drops, and relay its output while the connection lasts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import select
import shlex
import socket
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator

from testbed.errors import ConfigError
from testbed.files import contained
from testbed.remote.errors import (AuthFailed, ConnectFailed, ConnectionLost, HostKeyError,
                                   RemoteUnfit, UnsafeRemoteName)

CONNECT_TIMEOUT = 10.0
SUDO_PASSWORD_HINTS = ("a password is required", "a terminal is required")

# Runs on the remote as: python3 -I -c WRAPPER PIDFILE ARGV...  Output of ARGV is
# relayed; any byte or EOF on stdin (the SSH channel: closed when the
# connection drops) sends SIGTERM to ARGV, which then tears down and exits.
WRAPPER = r"""
import os, signal, subprocess, sys, threading
pidfile, argv = sys.argv[1], sys.argv[2:]
if pidfile:
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
try:
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
except OSError as exc:
    sys.stderr.write("testbed-remote: cannot start %s: %s\n" % (argv[0], exc))
    sys.exit(127)
stopping = []
def stop(*_):
    if not stopping:
        stopping.append(1)
        try:
            child.send_signal(signal.SIGTERM)
        except OSError:
            pass
for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
    signal.signal(s, stop)
def relay(src, fd):
    broken = False
    while True:
        chunk = os.read(src, 65536)
        if not chunk:
            return
        while chunk and not broken:
            try:
                chunk = chunk[os.write(fd, chunk):]
            except OSError:
                broken = True
                stop()
def watch():
    try:
        while os.read(0, 1024):
            stop()
    except OSError:
        pass
    stop()
threading.Thread(target=watch, daemon=True).start()
relays = [threading.Thread(target=relay, args=(p.fileno(), fd))
          for p, fd in ((child.stdout, 1), (child.stderr, 2))]
for t in relays:
    t.start()
rc = child.wait()
for t in relays:
    t.join()
if pidfile:
    try:
        os.unlink(pidfile)
    except OSError:
        pass
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        raise RemoteUnfit("remote hosts need paramiko: pip install 'testbed[remote]' "
                          "(or pip install paramiko)") from None
    return paramiko


def parse_spec(spec: str) -> tuple[str | None, str, int | None]:
    """``user@host:port`` -> (user, host, port); user and port optional; ``[v6]:port`` works."""
    user = None
    rest = spec
    if "@" in rest:
        user, rest = rest.rsplit("@", 1)
    port = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    else:
        host = rest
    if not host:
        raise ConnectFailed(f"{spec!r}: no host name (use user@host or user@host:port)")
    return user or None, host, port


@dataclass(frozen=True)
class Target:
    """Where to connect and how, resolved like OpenSSH would."""

    spec: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    known_hosts_read: tuple[str, ...] = ()
    known_hosts_write: str = ""
    proxy_command: str | None = None

    @property
    def hostkey_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def label(self) -> str:
        return self.spec


def resolve(spec: str, *, ssh_config: str | None = None, known_hosts: str | None = None,
            identity: str | None = None) -> Target:
    """A ``Target`` for ``spec``, applying ``~/.ssh/config`` (or ``ssh_config``)."""
    paramiko = _paramiko()
    user, host, port = parse_spec(spec)
    cfg_path = Path(ssh_config or os.path.expanduser("~/.ssh/config"))
    entry: dict[str, Any] = {}
    if cfg_path.is_file():
        entry = dict(paramiko.SSHConfig.from_path(str(cfg_path)).lookup(host))
    hostname = entry.get("hostname", host)
    idents = [identity] if identity else []
    idents += [os.path.expanduser(p) for p in _as_list(entry.get("identityfile"))]
    if known_hosts:
        read = [known_hosts]
        write = known_hosts
    else:
        user_files = [os.path.expanduser(p) for p in _as_list(entry.get("userknownhostsfile"))] \
            or [os.path.expanduser("~/.ssh/known_hosts")]
        read = user_files + ["/etc/ssh/ssh_known_hosts"]
        write = user_files[0]
    return Target(spec=spec, hostname=hostname, port=port or int(entry.get("port", 22)),
                  user=user or entry.get("user") or _local_user(),
                  identity_files=tuple(idents), known_hosts_read=tuple(read),
                  known_hosts_write=write, proxy_command=entry.get("proxycommand"))


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def _local_user() -> str:
    import getpass
    return getpass.getuser()


def fingerprint(key: Any) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _host_key_policy(target: Target, trust_new: bool, notes: list[str]) -> Any:
    paramiko = _paramiko()

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            known = client.get_host_keys().lookup(hostname) or \
                client._system_host_keys.lookup(hostname)
            desc = f"{key.get_name()} {fingerprint(key)}"
            if known:
                raise HostKeyError(
                    f"host key of {target.label} ({desc}) does not match known_hosts, which "
                    f"lists only {', '.join(sorted(known.keys()))} for {hostname}: refusing "
                    "to connect (remove the old entry with ssh-keygen -R if the host was "
                    "reinstalled)")
            if not trust_new:
                raise HostKeyError(
                    f"host key of {target.label} is unknown ({desc}; not in "
                    f"{', '.join(target.known_hosts_read)}): check the fingerprint on the host "
                    "(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then pass "
                    "--trust-new-host-key to record it, or connect once with ssh")
            path = Path(target.known_hosts_write)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)
            notes.append(f"recorded new host key of {target.label} ({desc}) in {path}")

    return Policy()


def _socket(target: Target, timeout: float) -> Any:
    if target.proxy_command:
        return _paramiko().ProxyCommand(target.proxy_command)
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
    except socket.gaierror as exc:
        raise ConnectFailed(f"cannot resolve {target.hostname!r} ({target.label}): "
                            f"{exc.strerror}") from None
    except ConnectionRefusedError:
        raise ConnectFailed(f"cannot connect to {target.hostname} port {target.port} "
                            f"({target.label}): connection refused (is sshd running there, "
                            "on that port?)") from None
    except (socket.timeout, TimeoutError):
        raise ConnectFailed(f"cannot connect to {target.hostname} port {target.port} "
                            f"({target.label}): timed out after {timeout:.0f} s") from None
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {target.hostname} port {target.port} "
                            f"({target.label}): {exc.strerror or exc}") from None
    # a host that vanishes without closing the connection is noticed in ~30 s
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3),
                       ("TCP_USER_TIMEOUT", 30000)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    return sock


@dataclass
class Connection:
    """An open SSH connection to one target."""

    target: Target
    client: Any
    notes: list[str] = field(default_factory=list)
    _sftp: Any = None
    _is_root: bool | None = None
    _home: str | None = None

    @classmethod
    def open(cls, target: Target, *, trust_new: bool = False,
             timeout: float = CONNECT_TIMEOUT) -> "Connection":
        paramiko = _paramiko()
        notes: list[str] = []
        client = paramiko.SSHClient()
        for path in target.known_hosts_read:
            if os.path.isfile(path):
                try:
                    client.load_system_host_keys(path)
                except (OSError, paramiko.SSHException) as exc:
                    raise HostKeyError(f"cannot read known_hosts {path}: {exc}") from None
        client.set_missing_host_key_policy(_host_key_policy(target, trust_new, notes))
        sock = _socket(target, timeout)
        try:
            client.connect(target.hostname, port=target.port, username=target.user,
                           key_filename=list(target.identity_files) or None, sock=sock,
                           timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                           allow_agent=True, look_for_keys=True)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"HOST KEY MISMATCH for {target.label}: it offered {exc.key.get_name()} "
                f"{fingerprint(exc.key)} but known_hosts has {fingerprint(exc.expected_key)}. "
                "Someone may be intercepting the connection, or the host was reinstalled "
                f"(then: ssh-keygen -R '{target.hostkey_name}'). Refusing to connect.") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthFailed(
                f"SSH authentication as {target.user} on {target.label} failed ({exc}): tried "
                "the agent, ~/.ssh/id_* and IdentityFile/-i keys; add your public key to the "
                "remote ~/.ssh/authorized_keys") from None
        except HostKeyError:
            client.close()
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            client.close()
            raise ConnectFailed(f"SSH handshake with {target.label} failed: {exc or type(exc).__name__}") from None
        client.get_transport().set_keepalive(10)
        return cls(target=target, client=client, notes=notes)

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001 - closing a dead channel may raise anything
                pass
        self.client.close()

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return bool(transport and transport.is_active())

    # ---- commands -------------------------------------------------------
    def simple(self, argv: list[str], *, timeout: float = 60.0) -> tuple[int, str, str]:
        """Run a short command to completion: (exit code, stdout, stderr)."""
        try:
            _, out, err = self.client.exec_command(shlex.join(argv), timeout=timeout)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            return out.channel.recv_exit_status(), stdout, stderr
        except (OSError, EOFError, _paramiko().SSHException) as exc:
            raise ConnectionLost(f"connection to {self.target.label} lost: {exc}") from None

    def is_root(self) -> bool:
        if self._is_root is None:
            rc, out, err = self.simple(["id", "-u"])
            if rc != 0:
                raise RemoteUnfit(f"{self.target.label}: 'id -u' failed: {err.strip()}")
            self._is_root = out.strip() == "0"
        return self._is_root

    def privileged(self, argv: list[str]) -> list[str]:
        """``argv`` as root: itself for root, else under ``sudo -n`` (never prompts)."""
        return list(argv) if self.is_root() else ["sudo", "-n", "--", *argv]

    def run(self, argv: list[str], *, root: bool = False, python: str = "python3",
            pidfile: str = "", out: Callable[[bytes], None] | None = None,
            err: Callable[[bytes], None] | None = None,
            stop: threading.Event | None = None) -> int:
        """Run ``argv`` under the wrapper, streaming output; return its exit code.

        Setting ``stop`` asks the remote command to end (SIGTERM) and keeps
        streaming until it has. Raises ``ConnectionLost`` if the connection
        drops first (the wrapper then ends the command on its side).
        """
        write_out = out or _writer(sys.stdout)
        write_err = err or _writer(sys.stderr)
        # -I: as root, the login directory (and PYTHON* variables) must not feed imports
        full = [python, "-I", "-c", WRAPPER, pidfile, *argv]
        if root:
            full = self.privileged(full)
        err_tail = bytearray()
        paramiko = _paramiko()
        try:
            chan = self.client.get_transport().open_session()
            chan.exec_command(shlex.join(full))
            stop_sent = False
            while True:
                if stop is not None and stop.is_set() and not stop_sent:
                    chan.sendall(b"stop\n")
                    stop_sent = True
                select.select([chan], [], [], 0.2)
                while chan.recv_ready():
                    write_out(chan.recv(65536))
                while chan.recv_stderr_ready():
                    data = chan.recv_stderr(65536)
                    err_tail[:] = (err_tail + data)[-2000:]
                    write_err(data)
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if not self.alive or (chan.closed and not chan.exit_status_ready()):
                    raise ConnectionLost(f"connection to {self.target.label} lost while running "
                                         f"{argv[0]}")
            rc = chan.recv_exit_status()
            if rc == -1:   # paramiko's "closed without an exit status"
                raise ConnectionLost(f"connection to {self.target.label} lost while running "
                                     f"{argv[0]}")
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionLost(f"connection to {self.target.label} lost while running "
                                 f"{argv[0]}: {exc}") from None
        if root and not self.is_root() and rc == 1 and \
                any(h in err_tail.decode(errors="replace") for h in SUDO_PASSWORD_HINTS):
            raise RemoteUnfit(f"{self.target.user} on {self.target.label} is not root and sudo "
                              "asks for a password: connect as root, or add the rule "
                              f"'{sudoers_rule(self.target.user, python)}' there (visudo -f "
                              f"/etc/sudoers.d/testbed; the path 'command -v {python}' prints "
                              f"there), which lets {self.target.user} run anything as root")
        return rc

    # ---- files ----------------------------------------------------------
    @property
    def sftp(self) -> Any:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
            except (OSError, EOFError, _paramiko().SSHException) as exc:
                raise RemoteUnfit(f"{self.target.label}: SFTP is not available ({exc}); "
                                  "testbed copies files with SFTP") from None
        return self._sftp

    def home(self) -> str:
        if self._home is None:
            self._home = self.sftp.normalize(".")
        return self._home

    @contextlib.contextmanager
    def _file_op(self, what: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            raise
        except (OSError, EOFError, _paramiko().SSHException) as exc:
            if not self.alive:
                raise ConnectionLost(f"connection to {self.target.label} lost while {what}: "
                                     f"{exc}") from None
            raise RemoteUnfit(f"{self.target.label}: {what} failed: {exc}") from None

    def makedirs(self, path: str) -> None:
        parts = PurePosixPath(path).parts
        for i in range(1, len(parts) + 1):
            sub = str(PurePosixPath(*parts[:i]))
            try:
                self.sftp.stat(sub)
            except FileNotFoundError:
                self.sftp.mkdir(sub)

    def put(self, local: str | os.PathLike[str], remote: str) -> None:
        with self._file_op(f"copying {local} there"):
            self.makedirs(str(PurePosixPath(remote).parent))
            self.sftp.put(str(local), remote)

    def exists(self, remote: str) -> bool:
        with self._file_op(f"looking for {remote}"):
            try:
                self.sftp.stat(remote)
                return True
            except FileNotFoundError:
                return False

    def listdir(self, remote: str) -> list[str]:
        with self._file_op(f"listing {remote}"):
            return sorted(self.sftp.listdir(remote))

    def get_tree(self, remote: str, local: Path) -> list[Path]:
        """Copy the directory ``remote`` to ``local`` recursively; return the files copied."""
        with self._file_op(f"copying {remote} home"):
            return self._get_tree(remote, local)

    def local_path(self, local: Path, name: str, remote: str) -> Path:
        """``local / name`` for an entry the remote lists in ``remote``: the host names
        it, so a name that would land anywhere but inside ``local`` is refused."""
        try:
            return contained(local, name, what="file name")
        except ConfigError as exc:
            raise UnsafeRemoteName(f"{self.target.label} lists an entry of {remote} that "
                                   f"cannot be copied home: {exc}") from None

    def _get_tree(self, remote: str, local: Path) -> list[Path]:
        copied: list[Path] = []
        local.mkdir(parents=True, exist_ok=True)
        for attr in self.sftp.listdir_attr(remote):
            dst = self.local_path(local, attr.filename, remote)
            src = f"{remote}/{attr.filename}"
            if stat.S_ISDIR(attr.st_mode or 0):
                copied += self._get_tree(src, dst)
            elif stat.S_ISREG(attr.st_mode or 0):
                self.sftp.get(src, str(dst))
                copied.append(dst)
        return copied


def sudoers_rule(user: str, python: str = "python3") -> str:
    """The sudoers line a non-root ``user`` needs: testbed runs ``sudo -n -- PYTHON -I -c
    WRAPPER ...`` (and ``PYTHON -I -c`` to remove its remote files), so the rule names the
    interpreter, and therefore lets ``user`` run any code as root."""
    path = python if python.startswith("/") else f"/usr/bin/{python}"
    return f"{user} ALL=(root) NOPASSWD: {path}"


def _writer(stream: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.buffer.write(data) if hasattr(stream, "buffer") else stream.write(
            data.decode(errors="replace"))
        stream.flush()
    return write
