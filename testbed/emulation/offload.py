"""Segmentation offloads on emulated interfaces (``ethtool -k/-K``).

With TSO/GSO/GRO on, a netfilter rule sees ~64 KB super-packets: a 1 %
loss rule drops whole bursts of ~42 segments and a jitter sample delays all
of them alike. Where loss, jitter or reordering must act per MTU packet,
the userspace backend turns ``tso``, ``gso`` and ``gro`` off on the
emulated interface. Note: traffic forwarded from another interface of the
same node can still arrive as a super-packet if its sender kept GSO on; the
realizer should turn offloads off on every interface of the path (call
``set_offloads`` for each) when per-packet semantics matter.
"""

from __future__ import annotations

import subprocess

from testbed.emulation._netns import enter
from testbed.errors import RealizeError

FEATURES = {"tso": "tcp-segmentation-offload", "gso": "generic-segmentation-offload",
            "gro": "generic-receive-offload"}


def parse_features(text: str) -> dict[str, bool]:
    """Map short feature names to on/off from ``ethtool -k`` output."""
    long_to_short = {v: k for k, v in FEATURES.items()}
    out = {}
    for line in text.splitlines():
        name, _, rest = line.strip().partition(":")
        if name in long_to_short:
            out[long_to_short[name]] = rest.strip().startswith("on")
    return out


def _ethtool(netns: str, argv: list[str]) -> str:
    with enter(netns):
        try:
            proc = subprocess.run(["ethtool", *argv], capture_output=True, text=True, timeout=10)
        except FileNotFoundError:
            raise RealizeError("ethtool is not installed; apt-get install ethtool") from None
    if proc.returncode != 0:
        raise RealizeError(f"ethtool {' '.join(argv)} in {netns} failed: {proc.stderr.strip()}")
    return proc.stdout


def read_offloads(netns: str, ifname: str) -> dict[str, bool]:
    return parse_features(_ethtool(netns, ["-k", ifname]))


def set_offloads(netns: str, ifname: str, on: bool) -> None:
    """Turn tso, gso and gro on or off, then read back."""
    word = "on" if on else "off"
    argv = ["-K", ifname]
    for short in FEATURES:
        argv += [short, word]
    _ethtool(netns, argv)
    got = read_offloads(netns, ifname)
    wrong = [k for k, v in got.items() if v != on]
    if wrong:
        raise RealizeError(f"offloads {', '.join(wrong)} on {netns}/{ifname} are still "
                           f"{'off' if on else 'on'} after ethtool -K (fixed by the driver?)")
