"""The built-in traffic agent: a small program run inside a namespace.

It does what iperf3 cannot: request/response latency, an exact congestion
control per connection (TCP_CONGESTION, read back after connect), and UDP
with a sequence number and send time in every packet, from which the
receiver computes one-way delay, jitter (RFC 3550), loss and reordering.

Run as ``python -m testbed.traffic.agent ROLE ...``; it prints one JSON
document on stdout when done (or on SIGTERM/SIGINT, with ``"stopped": true``).
Namespaces share the kernel's monotonic clock, so send and receive times
compare directly.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

UDP_HEADER = struct.Struct("!IIQQ")  # magic, stream, seq, send time (ns, CLOCK_MONOTONIC)
UDP_MAGIC = 0x7462_7564  # "tbud"
UDP_END_MAGIC = 0x7462_656E  # "tben": end marker, seq holds the packets sent
CHUNK = 128 * 1024


class Stopped(Exception):
    """SIGTERM or SIGINT arrived."""


def _on_signal(signum: int, frame: object) -> None:
    raise Stopped()


def _now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _recv_exact(sock: socket.socket, n: int, buf: bytearray) -> bool:
    got = 0
    while got < n:
        k = sock.recv_into(buf, min(n - got, len(buf)))
        if k == 0:
            return False
        got += k
    return True


def _tcp_connect(args: argparse.Namespace) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if args.cc:
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, args.cc.encode())
        except OSError as exc:
            raise SystemExit(json.dumps({"error": f"congestion control {args.cc!r} unavailable: "
                                                  f"{exc.strerror}"}))
    if args.sndbuf:     # before connect: fixed, not autotuned
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, args.sndbuf)
    if args.bind:
        s.bind((args.bind, 0))
    s.settimeout(args.connect_timeout)
    s.connect((args.host, args.port))
    s.settimeout(None)
    if args.mode == "rr":
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _conn_info(s: socket.socket) -> dict[str, Any]:
    cc = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).split(b"\0", 1)[0].decode()
    local = s.getsockname()
    return {"local_host": local[0], "local_port": local[1], "cc": cc}


def _request_response(s: socket.socket, args: argparse.Namespace, stop: threading.Event,
                      deadline: float | None, rec: dict[str, Any]) -> None:
    """Requests and their responses on ``s`` until stopped or the deadline; latencies in rec."""
    req = b"q" * args.request
    buf = bytearray(min(args.response, CHUNK))
    lat: list[int] = []
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        t0 = _now_ns()
        s.sendall(req)
        if not _recv_exact(s, args.response, buf):
            raise ConnectionError("server closed the connection")
        lat.append(_now_ns() - t0)
        if args.think > 0:
            stop.wait(args.think)
    rec["latencies_us"] = [x / 1000.0 for x in lat]
    rec["transactions"] = len(lat)
    rec["bytes"] = len(lat) * (args.request + args.response)


def _bulk(s: socket.socket, args: argparse.Namespace, stop: threading.Event,
          deadline: float | None, rec: dict[str, Any]) -> None:
    """Send until stopped, the deadline or ``args.size`` bytes; then wait until the
    receiver closes (every byte delivered)."""
    data = b"\0" * CHUNK
    sent = 0
    while not stop.is_set():
        if args.size and sent >= args.size:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
        n = CHUNK if not args.size else min(CHUNK, args.size - sent)
        sent += s.send(data[:n])
    rec["bytes"] = sent
    s.shutdown(socket.SHUT_WR)
    s.settimeout(max(5.0, args.duration or 0))
    s.recv(1)


def _client_connection(args: argparse.Namespace, stop: threading.Event, rec: dict[str, Any],
                       errors: list[str], i: int) -> None:
    try:
        s = _tcp_connect(args)
    except OSError as exc:
        errors.append(f"connect to {args.host}:{args.port}: {exc.strerror or exc}")
        return
    # the duration counts from this connection's start (as iperf3's -t does): a
    # handshake slowed by lost SYNs must not eat the time the flow was asked to send
    deadline = time.monotonic() + args.duration if args.duration else None
    rec.update(_conn_info(s))
    rec["start_ns"] = _now_ns()
    try:
        if args.mode == "rr":
            _request_response(s, args, stop, deadline, rec)
            s.shutdown(socket.SHUT_WR)
        else:
            _bulk(s, args, stop, deadline, rec)
    except OSError as exc:
        rec["error"] = exc.strerror or str(exc)
        errors.append(f"connection {i} (port {rec.get('local_port')}): {rec['error']}")
    finally:
        rec["end_ns"] = _now_ns()
        s.close()


def tcp_client(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = [{} for _ in range(args.count)]
    errors: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_client_connection, args=(args, stop, results[i], errors, i),
                                daemon=True) for i in range(args.count)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except Stopped:
        stop.set()
        for t in threads:
            t.join(2.0)
        return {"role": "client", "connections": results, "errors": errors, "stopped": True}
    return {"role": "client", "connections": results, "errors": errors}


def tcp_server(args: argparse.Namespace) -> dict[str, Any]:
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.rcvbuf:     # before listen: accepted sockets inherit it, and the window scale fits it
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    ls.bind((args.bind or "0.0.0.0", args.port))
    ls.listen(args.count + 4)
    conns: list[dict[str, Any]] = []
    threads: list[threading.Thread] = []

    def serve(c: socket.socket, rec: dict[str, Any]) -> None:
        buf = bytearray(CHUNK)
        total = 0
        rec["start_ns"] = _now_ns()
        try:
            if args.mode == "rr":
                resp = b"r" * args.response
                while _recv_exact(c, args.request, buf):
                    total += args.request
                    c.sendall(resp)
            else:
                while True:
                    k = c.recv_into(buf)
                    if k == 0:
                        break
                    total += k
        except OSError as exc:
            rec["error"] = exc.strerror or str(exc)
        rec["bytes"] = total
        rec["end_ns"] = _now_ns()
        c.close()

    stopped = False
    try:
        while len(conns) < args.count:
            c, peer = ls.accept()
            rec = {"remote_host": peer[0], "remote_port": peer[1]}
            conns.append(rec)
            t = threading.Thread(target=serve, args=(c, rec), daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except Stopped:
        stopped = True
    ls.close()
    return {"role": "server", "connections": [dict(c) for c in conns], "stopped": stopped}


def udp_client(args: argparse.Namespace) -> dict[str, Any]:
    socks = []
    for _ in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if args.bind:
            s.bind((args.bind, 0))
        s.connect((args.host, args.port))
        socks.append(s)
    payload = bytearray(args.packet_size)
    interval = args.packet_size * 8 / args.rate  # per stream
    sent = [0] * args.count
    errors = 0
    start = time.monotonic()
    end = start + args.duration
    stopped = False
    try:
        nxt = start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if nxt > now:
                time.sleep(min(nxt - now, end - now))
                continue
            for i, s in enumerate(socks):
                UDP_HEADER.pack_into(payload, 0, UDP_MAGIC, i, sent[i], _now_ns())
                try:
                    s.send(payload)
                    sent[i] += 1
                except OSError:
                    errors += 1
            nxt += interval
    except Stopped:
        stopped = True
    for i, s in enumerate(socks):
        for _ in range(3):
            try:
                s.send(UDP_HEADER.pack(UDP_END_MAGIC, i, sent[i], _now_ns()))
            except OSError:
                pass
        s.close()
    return {"role": "client", "streams": [{"stream": i, "sent": n} for i, n in enumerate(sent)],
            "send_errors": errors, "seconds": time.monotonic() - start, "stopped": stopped}


def udp_server(args: argparse.Namespace) -> dict[str, Any]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((args.bind or "0.0.0.0", args.port))
    s.settimeout(0.2)
    buf = bytearray(65536)
    out = open(args.packets_out, "w") if args.packets_out else None
    if out:
        out.write("stream,seq,send_ns,recv_ns,bytes\n")
    streams: dict[int, dict[str, Any]] = {}
    ended: set[int] = set()
    stopped = False
    last_packet = time.monotonic()
    try:
        while True:
            try:
                n = s.recv_into(buf)
            except socket.timeout:
                if (streams and len(ended) >= args.count) or \
                        (args.idle_timeout and time.monotonic() - last_packet > args.idle_timeout and streams):
                    break
                continue
            now = _now_ns()
            last_packet = time.monotonic()
            if n < UDP_HEADER.size:
                continue
            magic, sid, seq, sent_ns = UDP_HEADER.unpack_from(buf)
            if sid not in streams:
                streams[sid] = _new_stream(now)
            st = streams[sid]
            if magic == UDP_END_MAGIC:
                st["sent"] = seq
                ended.add(sid)
                if len(ended) >= args.count:
                    break
                continue
            if magic != UDP_MAGIC or not _count_packet(st, seq, n, sent_ns, now):
                continue
            if out:
                out.write(f"{sid},{seq},{sent_ns},{now},{n}\n")
    except Stopped:
        stopped = True
    finally:
        if out:
            out.close()
        s.close()
    result = [_stream_summary(sid, st) for sid, st in sorted(streams.items())]
    return {"role": "server", "streams": result, "stopped": stopped}


def _new_stream(now: int) -> dict[str, Any]:
    return {"received": 0, "bytes": 0, "max_seq": -1, "reordered": 0, "duplicates": 0,
            "jitter_ns": 0.0, "last_transit": None, "owd_ns": [], "seen": set(), "sent": None,
            "first_ns": now, "last_ns": now}


def _count_packet(st: dict[str, Any], seq: int, n: int, sent_ns: int, now: int) -> bool:
    """Account one data packet of a stream (RFC 3550 jitter); False for a duplicate."""
    if seq in st["seen"]:
        st["duplicates"] += 1
        return False
    st["seen"].add(seq)
    st["received"] += 1
    st["bytes"] += n
    st["last_ns"] = now
    if seq < st["max_seq"]:
        st["reordered"] += 1
    else:
        st["max_seq"] = seq
    transit = now - sent_ns
    st["owd_ns"].append(transit)
    if st["last_transit"] is not None:
        st["jitter_ns"] += (abs(transit - st["last_transit"]) - st["jitter_ns"]) / 16.0
    st["last_transit"] = transit
    return True


def _stream_summary(sid: int, st: dict[str, Any]) -> dict[str, Any]:
    return {"stream": sid, "received": st["received"], "bytes": st["bytes"],
            "max_seq": st["max_seq"], "sent": st["sent"], "reordered": st["reordered"],
            "duplicates": st["duplicates"], "jitter_us": st["jitter_ns"] / 1000.0,
            "owd_us": [x / 1000.0 for x in st["owd_ns"]],
            "seconds": (st["last_ns"] - st["first_ns"]) / 1e9}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m testbed.traffic.agent")
    p.add_argument("role", choices=("tcp-server", "tcp-client", "udp-server", "udp-client"))
    p.add_argument("--host", default="")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="")
    p.add_argument("--mode", choices=("bulk", "rr"), default="bulk")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--cc", default="")
    p.add_argument("--rcvbuf", type=int, default=0, help="SO_RCVBUF of the server's sockets")
    p.add_argument("--sndbuf", type=int, default=0, help="SO_SNDBUF of the client's sockets")
    p.add_argument("--request", type=int, default=100)
    p.add_argument("--response", type=int, default=100)
    p.add_argument("--think", type=float, default=0.0)
    p.add_argument("--rate", type=float, default=1e6, help="bit/s per stream (udp)")
    p.add_argument("--packet-size", type=int, default=1200)
    p.add_argument("--packets-out", default="")
    p.add_argument("--idle-timeout", type=float, default=0.0)
    p.add_argument("--connect-timeout", type=float, default=10.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    roles = {"tcp-server": tcp_server, "tcp-client": tcp_client,
             "udp-server": udp_server, "udp-client": udp_client}
    try:
        if args.role.endswith("server"):
            print(json.dumps({"ready": True}), file=sys.stderr, flush=True)
        result = roles[args.role](args)
    except Stopped:
        result = {"role": args.role, "stopped": True}
    except OSError as exc:
        result = {"role": args.role, "error": f"{exc.strerror or exc}"}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return 1 if result.get("error") or result.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
