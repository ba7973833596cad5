"""Segmentation offloads on emulated interfaces (what ``ethtool -k/-K`` do, by ioctl).

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

import ctypes
import fcntl
import socket
import struct

from testbed.kernel.netns import enter
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


SIOCETHTOOL = 0x8946
# legacy per-feature ethtool commands (struct ethtool_value {u32 cmd; u32 data}):
# still served by every kernel, and no ethtool binary is needed (the QEMU guest has none)
GET_SET = {"tso": (0x1E, 0x1F), "gso": (0x23, 0x24), "gro": (0x2B, 0x2C)}


def _ioctl(netns: str, ifname: str, cmd: int, data: int = 0) -> int:
    value = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    with enter(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError as exc:
        raise RealizeError(f"ethtool ioctl {cmd:#x} on {netns}/{ifname} failed: "
                           f"{exc.strerror}") from None
    finally:
        sock.close()
    return struct.unpack("=II", value.raw)[1]


def read_offloads(netns: str, ifname: str) -> dict[str, bool]:
    return {short: bool(_ioctl(netns, ifname, get)) for short, (get, _) in GET_SET.items()}


def set_offloads(netns: str, ifname: str, on: bool) -> None:
    """Turn tso, gso and gro on or off (SIOCETHTOOL, as ``ethtool -K``), then read back."""
    for _short, (_get, set_cmd) in GET_SET.items():
        _ioctl(netns, ifname, set_cmd, int(on))
    got = read_offloads(netns, ifname)
    wrong = [k for k, v in got.items() if v != on]
    if wrong:
        raise RealizeError(f"offloads {', '.join(wrong)} on {netns}/{ifname} are still "
                           f"{'off' if on else 'on'} after ethtool -K (fixed by the driver?)")
