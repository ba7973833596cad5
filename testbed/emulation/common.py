"""Types shared by the emulation backends: printable steps and state files
(one per link direction; its ``impairment`` is ``Impairment.as_fields``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import RealizeError
from testbed.files import write_atomic
from testbed.model.impairment import Impairment
from testbed.units import Duration


@dataclass(frozen=True)
class Step:
    """One printable step of an emulation plan (``testbed plan`` shows these)."""

    netns: str
    ifname: str
    action: str  # e.g. "tbf", "nft loss", "link engine", "offloads"
    detail: str

    def __str__(self) -> str:
        return f"{self.netns}/{self.ifname}: {self.action}: {self.detail}"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def state_path(state_dir: str | os.PathLike, netns: str, ifname: str) -> Path:
    """Where a backend records what it made for one link direction."""
    return Path(state_dir) / "emulation" / safe_name(netns) / f"{safe_name(ifname)}.json"


def write_state(path: Path, data: dict) -> None:
    """One direction's record: atomic for readers; not fsynced (it lives in /run, no
    longer than the links it describes, and ``up`` writes one per direction)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True), durable=False)


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Target:
    """One direction to apply (``apply_all``): where, what, and its NFQUEUE number (the
    sender interface's planned ifindex)."""

    netns: str
    ifname: str
    imp: Impairment
    owner_tag: str
    rtt_hint: Duration | None
    mtu: int
    queue: int
    ingress: tuple[str, str] | None = None   # (netns, ifname) of the receiving end

    @property
    def delay_site(self) -> tuple[str, str, str]:
        """(netns, ifname, hook) of the direction's delay line."""
        if self.ingress is None:
            return self.netns, self.ifname, "egress"
        return self.ingress[0], self.ingress[1], "ingress"


@dataclass
class Applied:
    """What is applied on one link direction (its state record), and what a change makes of it."""

    path: Path
    record: dict
    before: Impairment
    merged: Impairment        # what is to be in force after the change
    before_rtt: Duration | None
    rtt_hint: Duration | None  # the RTT hint after the change
    mtu: int


def applied_with(state_dir: str | os.PathLike, netns: str, ifname: str,
                 imp: Impairment, *, exact: bool = False, rtt_shift: float = 0.0) -> Applied:
    """The start of every backend's ``change``: the direction's record, or a clear error.

    ``imp`` is merged into what is applied (``exact``: replaces it); the RTT
    hint moves by ``rtt_shift`` seconds (``shift_rtt``).
    """
    path = state_path(state_dir, netns, ifname)
    record = read_state(path)
    if record is None:
        raise RealizeError(f"no emulated link on {netns}/{ifname} to change; apply it first")
    rtt = None if record["rtt_hint"] is None else Duration(record["rtt_hint"])
    before = Impairment.from_fields(record["impairment"])
    return Applied(path, record, before, imp if exact else before.merged(imp), rtt,
                   shift_rtt(rtt, rtt_shift), record["mtu"])


def delay_shift(before: Impairment | None, after: Impairment | None) -> float:
    """Pure: seconds by which one direction's delay changes from ``before`` to ``after``."""
    def delay(imp: Impairment | None) -> float:
        return imp.delay.seconds if imp is not None and imp.delay is not None else 0.0
    return delay(after) - delay(before)


def shift_rtt(rtt_hint: Duration | None, shift: float) -> Duration | None:
    """Pure: the RTT hint of a link whose delays changed by ``shift`` seconds in all.

    The hint is the round trip the link adds (forward + reverse delay; None
    when that is zero, which sizes buffers for 100 ms), so a delay change in
    either direction moves it by the same amount, and buffers given in BDP
    come out as a fresh ``plan`` with the new delays would size them.
    """
    if not shift:
        return rtt_hint
    total = round((rtt_hint.seconds if rtt_hint is not None else 0.0) + shift, 9)
    return Duration(total) if total > 0 else None

