"""Pure parts of the link emulation backends: support reporting, plans, messages."""

from __future__ import annotations

import random
import statistics
import struct

import pytest

from testbed.emulation import BACKENDS, NetemBackend, UserspaceBackend, select_backend
from testbed.emulation import netem, nfqueue, offload
from testbed.emulation.delayline import (ACCEPT_NOW, DROP, HOLD, DelayConfig, DelayLine,
                                         DelaySampler)
from testbed.emulation.distributions import netem_table, standard_factors
from testbed.emulation.userspace import resolve
from testbed.errors import PreflightError
from testbed.model.impairment import parse_impairment
from testbed.units import Duration


def imp(**kw):
    return parse_impairment(kw, file=None, path="t")


def test_registry_and_selection():
    assert set(BACKENDS) == {"netem", "userspace"}
    sel = select_backend("userspace")
    assert isinstance(sel.backend, UserspaceBackend)
    with pytest.raises(PreflightError):
        select_backend("bogus")
    auto = select_backend("auto")
    assert auto.backend.name in BACKENDS and auto.reason


def test_userspace_reports_what_it_cannot_do():
    problems = UserspaceBackend().unsupported(
        imp(delay="5ms", duplicate="1%", corrupt="1%"))
    assert [p.split(":")[0] for p in problems] == ["duplicate", "corrupt"]
    assert UserspaceBackend().unsupported(imp(queue="100p"))[0].startswith("queue")
    assert UserspaceBackend().unsupported(
        imp(rate="1gbit", delay="20ms", jitter="1ms", distribution="pareto", loss="1%",
            reorder="1%")) == []
    assert NetemBackend().unsupported(imp(delay="5ms", duplicate="1%", corrupt="1%")) == []


def test_userspace_plan():
    plan = resolve(imp(rate="100mbit", queue="1.5bdp", delay="20ms", jitter="2ms",
                       distribution="normal", loss="1%"), Duration(0.04), 1500)
    assert plan.tbf.rate_bytes == 12_500_000
    assert plan.tbf.limit == int(1.5 * 12_500_000 * 0.04)
    assert plan.delay == DelayConfig(delay_us=20000, jitter_us=2000, distribution="normal",
                                     loss=0.01)
    assert plan.offloads_off
    steps = [str(s) for s in UserspaceBackend().plan("ns", "eth0", imp(rate="10mbit"), None, 1500)]
    assert steps == ["ns/eth0: tbf: tbf handle 7462: root rate 10000000bit burst 3028b "
                     "limit 125000b"]
    assert resolve(imp(rate="10mbit"), None, 1500).delay is None
    assert not resolve(imp(delay="10ms"), None, 1500).offloads_off
    # 0 % loss acts on no packet: GSO stays on
    assert not resolve(imp(delay="10ms", loss="0%"), None, 1500).offloads_off
    steps = [str(s) for s in UserspaceBackend().plan("ns", "eth0", imp(delay="100s"), None, 1500)]
    assert "delay 100s jitter 0ms uniform" in steps[-2], steps


@pytest.mark.parametrize("dist", [None, "uniform", "normal", "pareto", "paretonormal"])
def test_sampler_matches_distribution(dist):
    s = DelaySampler(DelayConfig(delay_us=10000, jitter_us=1000, distribution=dist),
                     random.Random(7))
    xs = [s.sample_ns() / 1e6 for _ in range(40000)]
    mean_f, std_f = standard_factors(dist)
    assert statistics.mean(xs) == pytest.approx(10 + mean_f, abs=0.03)
    assert statistics.pstdev(xs) == pytest.approx(std_f, rel=0.03)


def test_netem_tables_look_like_iproute2():
    assert len(netem_table("normal")) == 4096
    assert netem_table("pareto")[0] == -5461  # (1 - 1.5) * 4/3 * 8192
    assert max(netem_table("pareto")) == 32767
    assert standard_factors("normal")[1] == pytest.approx(1.0, abs=0.001)


def test_delay_line_releases_in_arrival_order():
    line = DelayLine(DelayConfig(delay_us=1000, jitter_us=900, distribution="normal"),
                     random.Random(1))
    for i in range(1, 200):
        assert line.arrive(i, i * 10_000) == HOLD  # packets 10 us apart
    released, t = [], 0
    while len(line):
        t += 50_000
        last = line.release(t)
        if last is not None:
            released.append(last)
    assert released == sorted(released) and released[-1] == 199


def test_delay_line_due_times():
    line = DelayLine(DelayConfig(delay_us=20000), random.Random(1))
    line.arrive(5, 1_000_000)
    assert line.next_due() == 21_000_000
    assert line.release(20_999_999) is None
    assert line.release(21_000_000) == 5
    assert line.release_all() is None


def test_delay_line_loss_and_reorder():
    line = DelayLine(DelayConfig(delay_us=1000, loss=0.1, reorder=0.2), random.Random(3))
    actions = [line.arrive(i, 0) for i in range(20000)]
    assert actions.count(DROP) / 20000 == pytest.approx(0.1, abs=0.01)
    assert actions.count(ACCEPT_NOW) / 20000 == pytest.approx(0.9 * 0.2, abs=0.01)


def test_gilbert_elliott_mean_loss():
    ge = imp(loss={"p": "2%", "r": "20%", "h": "10%", "k": "99%"}).loss
    line = DelayLine(DelayConfig(ge_p=0.02, ge_r=0.2, ge_h=0.1, ge_k=0.99), random.Random(5))
    n = 100000
    lost = sum(line.arrive(i, 0) == DROP for i in range(n)) / n
    assert lost == pytest.approx(ge.mean_loss, abs=0.01)


def test_nfqueue_messages():
    msgs = nfqueue.bind_messages(7, 65536)
    length, mtype, flags, seq, _ = struct.unpack_from("=IHHII", msgs[0])
    assert length == len(msgs[0]) and mtype == (3 << 8) | 2 and flags == 0x5
    assert struct.unpack_from(">H", msgs[0], 18)[0] == 7
    assert b"\x00\x00\x00\x04" in msgs[2]  # NFQA_CFG_F_GSO, and no FAIL_OPEN bit
    assert not any(struct.pack(">I", 1) in m[20:] and b"\x05\x00" in m for m in msgs[2:])
    v = nfqueue.batch_verdict(7, 1234)
    assert struct.unpack_from("=H", v, 4)[0] == (3 << 8) | 3
    assert struct.unpack_from(">II", v, 24) == (nfqueue.NF_ACCEPT, 1234)
    # a kernel packet message: header, nfgenmsg, NFQA_PACKET_HDR first
    pkt = (struct.pack("=IHHII", 32, 3 << 8, 0, 0, 0) + struct.pack("=BBH", 2, 0, 0)
           + struct.pack("=HH", 11, 1) + struct.pack(">IHB", 99, 0x0800, 4) + b"\0")
    assert nfqueue.packet_id(pkt) == 99
    proc = "    6  20917     0 1     0     0     0        0  1\n"
    assert nfqueue.parse_proc(proc)[6].portid == 20917


def test_offload_parsing():
    text = ("Features for eth0:\ntcp-segmentation-offload: off\n"
            "generic-segmentation-offload: on\ngeneric-receive-offload: off [fixed]\n")
    assert offload.parse_features(text) == {"tso": False, "gso": True, "gro": False}


def test_netem_plan_and_options():
    i = imp(rate="100mbit", delay="20ms", jitter="1ms", distribution="normal",
            loss={"p": "1%", "r": "10%", "h": "5%", "k": "99%"}, reorder="2%",
            duplicate="1%", corrupt="0.1%", queue="200p")
    p = netem.resolve(i, Duration(0.04), 1500)
    assert p.tbf.limit == 200 * 1514
    assert p.netem.limit >= 10_000 and p.netem.gap == 1
    assert p.netem.gemodel == (netem.prob_u32(0.01), netem.prob_u32(0.1),
                               netem.prob_u32(0.05), netem.prob_u32(0.01))
    raw = netem.netem_options(p.netem)
    latency, limit, loss, gap, dup, jitter = struct.unpack_from("=IIIIII", raw)
    assert (limit, loss, gap, dup) == (p.netem.limit, 0, 1, netem.prob_u32(0.01))
    attrs, off = {}, 24
    while off < len(raw):
        ln, typ = struct.unpack_from("=HH", raw, off)
        attrs[typ] = raw[off + 4: off + ln]
        off += (ln + 3) & ~3
    assert struct.unpack("=q", attrs[netem.TCA_NETEM_LATENCY64])[0] == 20_000_000
    assert struct.unpack("=q", attrs[netem.TCA_NETEM_JITTER64])[0] == 1_000_000
    assert len(attrs[netem.TCA_NETEM_DELAY_DIST]) == 4096 * 2
    assert struct.unpack("=II", attrs[netem.TCA_NETEM_REORDER])[0] == netem.prob_u32(0.02)
    ge = attrs[netem.TCA_NETEM_LOSS]
    assert struct.unpack_from("=HH", ge)[1] == netem.NETEM_LOSS_GE
    steps = [str(s) for s in NetemBackend().plan("ns", "eth0", i, Duration(0.04), 1500)]
    assert steps[0].startswith("ns/eth0: netem: netem handle 7462: root")
    assert "parent 7462:1" in steps[1]


def test_netem_random_loss_in_qopt():
    p = netem.resolve(imp(delay="10ms", loss="1%"), None, 1500)
    raw = netem.netem_options(p.netem)
    assert struct.unpack_from("=IIIIII", raw)[2] == netem.prob_u32(0.01)
    assert netem.TCA_NETEM_DELAY_DIST not in (struct.unpack_from("=HH", raw, 24)[1],)
    msg = netem.qdisc_message(3, "netem", netem.NETEM_HANDLE, netem.TC_H_ROOT, raw, 0x505)
    assert struct.unpack_from("=IH", msg) == (len(msg), 36)
