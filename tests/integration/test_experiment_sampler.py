"""The tcp_info sampler against the real kernel, on loopback sockets of this
test (no traffic leaves the process): the inet_diag port filter passes the
kernel's audit and returns exactly the sockets asked for, and the sampler
spools them every tick."""

from __future__ import annotations

import socket
import time

from testbed.collect import tcpinfo


def listeners_and_clients(ports_wanted: int):
    listeners, clients = [], []
    for _ in range(ports_wanted):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        listeners.append(s)
        clients.append(socket.create_connection(s.getsockname()))
    return listeners, clients


def test_kernel_port_filter_returns_exactly_the_ports_asked_for():
    listeners, clients = listeners_and_clients(5)
    try:
        ports = [s.getsockname()[1] for s in listeners]
        sock = tcpinfo.open_diag_socket()
        buf = bytearray(1 << 20)
        for chosen in ([ports[0]], ports[1:4], [ports[0], ports[2], ports[4]], ports, [1]):
            req = tcpinfo.build_request(dports=frozenset(chosen))
            got = sorted(tcpinfo.ports_of(m)[1] for m in tcpinfo.dump(sock, req, buf))
            assert got == sorted(p for p in ports if p in chosen)
        sock.close()
    finally:
        for s in listeners + clients:
            s.close()


def test_sampler_spools_only_its_ports_each_tick(tmp_path):
    listeners, clients = listeners_and_clients(3)
    try:
        ports = frozenset(s.getsockname()[1] for s in listeners[:2])
        sampler = tcpinfo.TcpInfoSampler([("lo", tcpinfo.open_diag_socket())], tmp_path / "spool",
                                         interval=0.005, ports=ports)
        sampler.start()
        deadline = time.monotonic() + 30
        while sampler.stats.ticks < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = sampler.stop()
        assert sampler.error is None
        rows, losses = tcpinfo.decode_spool((tmp_path / "spool").read_bytes(), sampler.labels)
        assert stats.ticks >= 20 and losses == []
        assert {r["dport"] for r in rows} == set(ports)
        assert len(rows) == 2 * stats.ticks  # both sockets, every tick
        assert all(r["state"] == "ESTABLISHED" and r["cwnd"] for r in rows)
    finally:
        for s in listeners + clients:
            s.close()
