"""A tbf changed under traffic: when its queue must be replaced, and the message that does it."""

from __future__ import annotations

import struct

from testbed.emulation import tbf
from testbed.kernel import tc as rtnl


def test_queue_goes_only_when_the_burst_shrinks():
    fast = tbf.tbf_params(100e6, 500_000, 1500)     # burst ~1 ms of tokens: 12500 b
    slow = tbf.tbf_params(10e6, 500_000, 1500)      # two frames: 3028 b
    slower = tbf.tbf_params(5e6, 500_000, 1500)     # two frames too
    assert (fast.burst, slow.burst, slower.burst) == (12500, 3028, 3028)
    assert tbf.queue_must_go(fast, slow)            # a 4 KB GSO packet queued at 100M is stuck
    assert not tbf.queue_must_go(slow, fast)
    assert not tbf.queue_must_go(slow, slower)      # same burst: nothing queued can be too big
    assert not tbf.queue_must_go(None, slow)        # a new tbf has no queue
    note = tbf.Flushed(12500, 3028, 9, 40878).describe()
    assert "12500b -> 3028b" in note and "9 packets (40878 bytes)" in note


def test_fresh_queue_message_is_a_bfifo_under_the_tbf():
    msg = rtnl.qdisc_message(7, "bfifo", tbf.FIFO_HANDLES[0], tbf.HANDLE | 1,
                             struct.pack("=I", 125000), rtnl.CREATE_OR_REPLACE)
    length, mtype, flags = struct.unpack_from("=IHH", msg)
    assert (length, mtype, flags) == (len(msg), 36, 0x505)
    _family, ifindex, handle, parent = struct.unpack_from("=BxxxiII", msg, 16)
    assert (ifindex, handle, parent) == (7, 0x74640000, 0x74620001)
    assert b"bfifo\0" in msg and msg.endswith(struct.pack("=I", 125000))
