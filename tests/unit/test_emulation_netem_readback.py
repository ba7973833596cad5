"""The netem backend's readback check (pure)."""

from testbed.emulation.netem import readback_differences, resolve
from testbed.model.impairment import parse_impairment

TICK_PER_US = 15.625  # /proc/net/psched on Linux: 64 ns ticks


def plan(**kw):
    return resolve(parse_impairment(kw, file=None, path="t"), None, 1500).netem


def kernel_view(p, **override):
    got = {"limit": p.limit, "loss": p.loss, "duplicate": p.duplicate, "gap": p.gap,
           "reorder": p.reorder, "corrupt": p.corrupt, "root": True,
           "delay_ns": p.latency_ns // 64 * 64, "jitter_ns": p.jitter_ns // 64 * 64}
    got.update(override)
    return got


def test_matching_readback_passes():
    p = plan(delay="30ms", jitter="1ms", loss="2%", reorder="1%")
    assert readback_differences(p, kernel_view(p), TICK_PER_US) == []


def test_each_difference_is_named():
    p = plan(delay="30ms", loss="2%")
    assert readback_differences(p, None, TICK_PER_US)
    assert any("delay_ns" in d for d in
               readback_differences(p, kernel_view(p, delay_ns=10_000_000), TICK_PER_US))
    assert any("loss" in d for d in
               readback_differences(p, kernel_view(p, loss=0), TICK_PER_US))
    assert any("root" in d for d in
               readback_differences(p, kernel_view(p, root=False), TICK_PER_US))
