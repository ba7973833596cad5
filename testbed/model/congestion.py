"""Congestion control names, as topologies (a node's ``cc:``) and workloads (a flow's
``cc:``) give them: one rule for what a name looks like and one list of near misses."""

from __future__ import annotations

import difflib
import re

# a name as the kernel has them (TCP_CA_NAME_MAX is 16 with the NUL)
CC_RE = re.compile(r"[a-z0-9_]{1,15}")
# congestion controls of Linux (net/ipv4/tcp_*.c) and the common out-of-tree ones
KNOWN_CC = ("bbr", "bbr2", "bbr3", "bic", "cdg", "cubic", "dctcp", "highspeed", "htcp", "hybla",
            "illinois", "lp", "nv", "prague", "reno", "scalable", "vegas", "veno", "westwood",
            "yeah")


def misspelt_cc(name: str) -> str | None:
    """The known congestion control ``name`` is a near miss of (``renno`` -> ``reno``), or None
    when it is known or like none (a module of its own: the preflight checks the kernel)."""
    if name.startswith("tcp_") and len(name) > 4:
        return name[4:]                 # the module's name, not the algorithm's
    if name in KNOWN_CC or any(name.startswith(k) for k in KNOWN_CC):
        return None                     # known, or a variant of one built as its own module
    match = difflib.get_close_matches(name, KNOWN_CC, n=1, cutoff=0.75)
    return match[0] if match else None


def cc_problem(value: object) -> str | None:
    """Why ``value`` is not a congestion control name to try, or None."""
    if not isinstance(value, str) or not CC_RE.fullmatch(value):
        return f"{value!r} is not a congestion control name (e.g. cubic, bbr, reno)"
    guess = misspelt_cc(value)
    if guess:
        return f"unknown congestion control {value!r}; did you mean {guess!r}?"
    return None
