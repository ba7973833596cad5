"""Fixtures and probes for the link emulation integration tests.

``emu_pair`` builds two namespaces ``tbtest-emu-<random>-a/-b`` joined by a
veth pair (eth0 on both sides, 10.x.y.1/.2), and tears down exactly those
(including anything the backend left) even when the test fails. Probes
send real packets between the two namespaces only.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.kernel.netns import discard, enter, processes_in

requires_root = pytest.mark.skipif(os.geteuid() != 0,
                                   reason="needs root to create network namespaces")


@dataclass(frozen=True)
class EmuPair:
    a: str
    b: str
    addr_a: str
    addr_b: str
    owner: str
    state_dir: Path


@contextmanager
def make_pair(state_dir: Path) -> Iterator[EmuPair]:
    from pyroute2 import IPRoute, netns

    tag = secrets.token_hex(3)
    a, b = f"tbtest-emu-{tag}-a", f"tbtest-emu-{tag}-b"
    octet = int(tag[:2], 16) % 250 + 1
    pair = EmuPair(a=a, b=b, addr_a=f"10.{octet}.77.1", addr_b=f"10.{octet}.77.2",
                   owner=f"t{tag}", state_dir=state_dir)
    try:
        netns.create(a)
        netns.create(b)
        with IPRoute() as ipr:
            ipr.link("add", ifname=f"tbe{tag}a", kind="veth", peer=f"tbe{tag}b")
            ia = ipr.link_lookup(ifname=f"tbe{tag}a")[0]
            ib = ipr.link_lookup(ifname=f"tbe{tag}b")[0]
            ipr.link("set", index=ia, net_ns_fd=a)
            ipr.link("set", index=ib, net_ns_fd=b)
        for ns, old, addr in ((a, f"tbe{tag}a", pair.addr_a), (b, f"tbe{tag}b", pair.addr_b)):
            with enter(ns), IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=old)[0]
                ipr.link("set", index=idx, ifname="eth0")
                ipr.addr("add", index=idx, address=addr, prefixlen=24)
                ipr.link("set", index=idx, state="up")
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                # no IPv6 chatter: every packet through the delay line is a probe
                with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", "w") as f:
                    f.write("1")
        yield pair
    finally:
        discard([a, b])


def left_behind(pair: EmuPair) -> list[str]:
    """Everything of ours still present in the pair's namespaces."""
    import subprocess

    from pyroute2 import IPRoute

    found = []
    for ns in (pair.a, pair.b):
        with enter(ns):
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname="eth0")[0]
                for q in ipr.get_qdiscs(index=idx):
                    if q.get_attr("TCA_KIND") not in ("noqueue", None):
                        found.append(f"{ns}: qdisc {q.get_attr('TCA_KIND')}")
            tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                    text=True).stdout
            found += [f"{ns}: {t}" for t in tables.splitlines() if "testbed_" in t]
            for tool in ("iptables", "ip6tables"):
                rules = subprocess.run([tool, "-w", "-t", "mangle", "-S"], capture_output=True,
                                       text=True).stdout
                found += [f"{ns}: {r}" for r in rules.splitlines() if "NFQUEUE" in r]
        for pid in processes_in([ns]):
            found.append(f"{ns}: process {pid}")
    return found


def udp_socket(netns: str, bind: tuple[str, int]) -> socket.socket:
    with enter(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(bind)
    return sock


def udp_rtts(pair: EmuPair, count: int, interval: float, port: int = 7777,
             timeout: float = 2.0) -> list[float]:
    """Send ``count`` timestamped UDP probes a -> b, echoed back; RTTs in seconds."""
    server = udp_socket(pair.b, (pair.addr_b, port))
    client = udp_socket(pair.a, (pair.addr_a, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(2048)
            except socket.timeout:
                continue
            server.sendto(data, peer)

    rtts: dict[int, float] = {}

    def receive() -> None:
        client.settimeout(0.2)
        deadline = None
        while True:
            try:
                data = client.recv(2048)
            except socket.timeout:
                if stop.is_set() and (deadline is None or time.monotonic() > deadline):
                    return
                if stop.is_set() and deadline is None:
                    deadline = time.monotonic() + timeout
                continue
            seq, sent = struct.unpack("!Id", data[:12])
            rtts[seq] = time.monotonic() - sent

    t_echo = threading.Thread(target=echo, daemon=True)
    t_recv = threading.Thread(target=receive, daemon=True)
    t_echo.start()
    t_recv.start()
    try:
        start = time.monotonic()
        for seq in range(count):
            target = start + seq * interval
            while (now := time.monotonic()) < target:
                time.sleep(min(target - now, 0.001))
            _send(client, struct.pack("!Id", seq, time.monotonic()) + b"x" * 52,
                          (pair.addr_b, port))
        time.sleep(timeout)
    finally:
        stop.set()
        t_recv.join(timeout + 1)
        t_echo.join(1)
        server.close()
        client.close()
    return [rtts[k] for k in sorted(rtts)]


def udp_blast_received(pair: EmuPair, count: int, port: int = 7778) -> int:
    """Send ``count`` UDP datagrams a -> b as fast as possible; how many arrived."""
    server = udp_socket(pair.b, (pair.addr_b, port))
    server.setsockopt(socket.SOL_SOCKET, 33, 64 * 1024 * 1024)  # SO_RCVBUFFORCE
    client = udp_socket(pair.a, (pair.addr_a, 0))
    try:
        payload = b"y" * 64
        for i in range(count):
            client.sendto(payload, (pair.addr_b, port))
            if i % 200 == 199:
                time.sleep(0.0005)  # let the receiver keep up
        time.sleep(0.3)
        server.setblocking(False)
        got = 0
        while True:
            try:
                server.recv(2048)
            except BlockingIOError:
                return got
            got += 1
    finally:
        server.close()
        client.close()


def _send(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    try:
        sock.sendto(data, addr)
    except PermissionError:
        pass  # a local netfilter drop; counted as lost by the caller
