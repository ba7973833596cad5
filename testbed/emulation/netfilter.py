"""Netfilter rules of the userspace backend: nft loss and the iptables NFQUEUE hook.

Loss: an nftables table per (owner, interface), ``inet testbed_<owner>_<ifname>``,
with one postrouting chain at priority -300 (before mangle, so dropped
packets never reach the delay line) holding ``oifname X numgen random mod
1000000 < K drop``. Deleting that table removes exactly what we made.

Delay: the native nft ``queue`` statement is not built on our kernels, but
the iptables NFQUEUE target is, so the delay line hooks in with
``iptables``/``ip6tables -t mangle -A POSTROUTING -o X -m comment --comment
testbed:<owner> -j NFQUEUE --queue-num N``, WITHOUT --queue-bypass: if the
daemon is gone, packets are dropped rather than sent undelayed.

Tools run as argv lists inside the namespace (the forked child inherits
the thread's namespace).
"""

from __future__ import annotations

import json
import re
import subprocess

from testbed.emulation._netns import enter
from testbed.errors import RealizeError

LOSS_MOD = 1_000_000
LOSS_PRIORITY = -300
IPTABLES = ("iptables", "ip6tables")


def _run(netns: str, argv: list[str], stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    with enter(netns):
        try:
            proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                  timeout=30)
        except FileNotFoundError:
            raise RealizeError(f"{argv[0]} is not installed; install it "
                               f"(Debian: apt-get install {argv[0].rstrip('6')})") from None
    if check and proc.returncode != 0:
        raise RealizeError(f"{' '.join(argv)} failed in namespace {netns!r}: "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def loss_table(owner_tag: str, ifname: str) -> str:
    return f"testbed_{_ident(owner_tag)}_{_ident(ifname)}"


def loss_threshold(fraction: float) -> int:
    """K in ``numgen random mod 1000000 < K`` for a loss probability."""
    return int(round(fraction * LOSS_MOD))


def loss_script(owner_tag: str, ifname: str, threshold: int) -> str:
    """nft script that (re)creates the loss table atomically."""
    table = loss_table(owner_tag, ifname)
    return (f"table inet {table} {{}}\n"
            f"delete table inet {table}\n"
            f"table inet {table} {{\n"
            f"  chain loss {{\n"
            f"    type filter hook postrouting priority {LOSS_PRIORITY}; policy accept;\n"
            f"    oifname \"{ifname}\" numgen random mod {LOSS_MOD} < {threshold} counter drop\n"
            f"  }}\n"
            f"}}\n")


def read_loss(netns: str, owner_tag: str, ifname: str) -> dict | None:
    """Our loss rule as nft reports it: {"threshold", "packets"}, or None."""
    table = loss_table(owner_tag, ifname)
    proc = _run(netns, ["nft", "-j", "list", "table", "inet", table], check=False)
    if proc.returncode != 0:
        return None
    for item in json.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        out: dict = {}
        for expr in rule.get("expr", []):
            match = expr.get("match")
            if match and isinstance(match.get("left"), dict) and "numgen" in match["left"]:
                ng = match["left"]["numgen"]
                if ng.get("mode") == "random" and ng.get("mod") == LOSS_MOD \
                        and match.get("op") == "<":
                    out["threshold"] = int(match["right"])
            if match and match.get("left") == {"meta": {"key": "oifname"}}:
                out["oifname"] = match.get("right")
            if "counter" in expr:
                out["packets"] = expr["counter"].get("packets", 0)
            if "drop" in expr:
                out["drop"] = True
        if "threshold" in out and out.get("drop") and out.get("oifname") == ifname:
            return out
    return None


def apply_loss(netns: str, owner_tag: str, ifname: str, threshold: int) -> None:
    _run(netns, ["nft", "-f", "-"], stdin=loss_script(owner_tag, ifname, threshold))
    got = read_loss(netns, owner_tag, ifname)
    if got is None or got["threshold"] != threshold:
        raise RealizeError(f"loss rule in {netns} table {loss_table(owner_tag, ifname)} "
                           f"reads back as {got}, planned threshold {threshold}/{LOSS_MOD}")


def remove_loss(netns: str, owner_tag: str, ifname: str) -> None:
    table = loss_table(owner_tag, ifname)
    proc = _run(netns, ["nft", "delete", "table", "inet", table], check=False)
    if proc.returncode != 0 and "No such file" not in proc.stderr:
        raise RealizeError(f"deleting nft table {table} in {netns} failed: {proc.stderr.strip()}")


def queue_rule(owner_tag: str, ifname: str, queue_num: int) -> list[str]:
    """The POSTROUTING rule spec (without -A/-D/-C) sending ``ifname`` to the queue."""
    return ["-o", ifname, "-m", "comment", "--comment", f"testbed:{owner_tag}",
            "-j", "NFQUEUE", "--queue-num", str(queue_num)]


def has_queue_rule(netns: str, tool: str, spec: list[str]) -> bool:
    proc = _run(netns, [tool, "-w", "-t", "mangle", "-C", "POSTROUTING", *spec], check=False)
    return proc.returncode == 0


def apply_queue(netns: str, owner_tag: str, ifname: str, queue_num: int) -> None:
    spec = queue_rule(owner_tag, ifname, queue_num)
    for tool in IPTABLES:
        if not has_queue_rule(netns, tool, spec):
            _run(netns, [tool, "-w", "-t", "mangle", "-A", "POSTROUTING", *spec])
        if not has_queue_rule(netns, tool, spec):
            raise RealizeError(f"{tool} NFQUEUE rule for {netns}/{ifname} did not read back")


def remove_queue(netns: str, owner_tag: str, ifname: str, queue_num: int) -> None:
    spec = queue_rule(owner_tag, ifname, queue_num)
    for tool in IPTABLES:
        while has_queue_rule(netns, tool, spec):
            _run(netns, [tool, "-w", "-t", "mangle", "-D", "POSTROUTING", *spec])
