"""Netfilter rule of the userspace backend: the iptables NFQUEUE hook.

Why no nft ``numgen ... drop`` for loss: a netfilter drop on the egress of
a host's OWN traffic is synchronous, so the sending socket gets EPERM and
TCP simply retries the segment (no loss seen, no cwnd reduction): 1 %
configured loss would look like a clean link to a local TCP sender. An
asynchronous NF_DROP verdict from the link engine is a real loss in the
network for every sender, local or forwarded, so all loss lives there.

Delay: the native nft ``queue`` statement is not built on our kernels, but
the iptables NFQUEUE target is, so the delay line hooks in with
``iptables``/``ip6tables -t mangle -A POSTROUTING -o X -m comment --comment
testbed:<owner> -j NFQUEUE --queue-num N``, WITHOUT --queue-bypass: if the
engine is gone, packets are dropped rather than sent undelayed.

Tools run as argv lists inside the namespace (the forked child inherits
the thread's namespace).
"""

from __future__ import annotations

import subprocess

from testbed.kernel.netns import enter
from testbed.errors import RealizeError

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


# Where a delay line hooks in: a sender's egress (POSTROUTING -o) or, for a
# host's own traffic, the receiver's ingress (PREROUTING -i; see userspace.py).
HOOKS = {"egress": ("POSTROUTING", "-o"), "ingress": ("PREROUTING", "-i")}


def queue_rule(owner_tag: str, ifname: str, queue_num: int, hook: str = "egress") -> list[str]:
    """The rule spec (without -A/-D/-C) sending ``ifname``'s packets to the queue."""
    return [HOOKS[hook][1], ifname, "-m", "comment", "--comment", f"testbed:{owner_tag}",
            "-j", "NFQUEUE", "--queue-num", str(queue_num)]


def has_queue_rule(netns: str, tool: str, spec: list[str], hook: str = "egress") -> bool:
    proc = _run(netns, [tool, "-w", "-t", "mangle", "-C", HOOKS[hook][0], *spec], check=False)
    return proc.returncode == 0


def apply_queue(netns: str, owner_tag: str, ifname: str, queue_num: int,
                hook: str = "egress") -> None:
    spec = queue_rule(owner_tag, ifname, queue_num, hook)
    for tool in IPTABLES:
        if not has_queue_rule(netns, tool, spec, hook):
            _run(netns, [tool, "-w", "-t", "mangle", "-A", HOOKS[hook][0], *spec])
        if not has_queue_rule(netns, tool, spec, hook):
            raise RealizeError(f"{tool} NFQUEUE rule for {netns}/{ifname} did not read back")


def remove_queue(netns: str, owner_tag: str, ifname: str, queue_num: int,
                 hook: str = "egress") -> None:
    spec = queue_rule(owner_tag, ifname, queue_num, hook)
    for tool in IPTABLES:
        while has_queue_rule(netns, tool, spec, hook):
            _run(netns, [tool, "-w", "-t", "mangle", "-D", HOOKS[hook][0], *spec])


RESTORE = {"iptables": "iptables-restore", "ip6tables": "ip6tables-restore"}
_PARALLEL = 8


def restore_text(rules: list[tuple[str, str, int, str]]) -> str:
    """``iptables-restore --noflush`` input appending the rules ``(owner_tag, ifname,
    queue_num, hook)`` to the mangle table, committed as one transaction."""
    lines = ["*mangle"]
    lines += [" ".join(["-A", HOOKS[hook][0], *queue_rule(owner, ifname, queue, hook)])
              for owner, ifname, queue, hook in rules]
    return "\n".join([*lines, "COMMIT", ""])


def apply_queues(rules: dict[str, list[tuple[str, str, int, str]]]) -> None:
    """Many NFQUEUE rules at once: per namespace and family one ``iptables-restore
    --noflush`` (one atomic commit: its exit status is the read-back), up to
    ``_PARALLEL`` running side by side. The rules must not exist yet (``up``)."""
    jobs = [(netns, tool) for netns in rules for tool in IPTABLES]
    running: list[tuple[str, str, subprocess.Popen]] = []
    failed = []
    for netns, tool in jobs:
        if len(running) >= _PARALLEL:
            failed += _finish(running.pop(0))
        with enter(netns):
            try:
                proc = subprocess.Popen([RESTORE[tool], "-w", "--noflush"],
                                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
            except FileNotFoundError:
                raise RealizeError(f"{RESTORE[tool]} is not installed; install it (Debian: "
                                   "apt-get install iptables)") from None
        proc.stdin.write(restore_text(rules[netns]))
        proc.stdin.close()
        running.append((netns, tool, proc))
    for job in running:
        failed += _finish(job)
    if failed:
        raise RealizeError("NFQUEUE rules were refused: " + "; ".join(failed))


def _finish(job: tuple[str, str, subprocess.Popen]) -> list[str]:
    netns, tool, proc = job
    err = proc.stderr.read()
    if proc.wait(timeout=60) != 0:
        return [f"{RESTORE[tool]} in {netns}: {err.strip()}"]
    return []
