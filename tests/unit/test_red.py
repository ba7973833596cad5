"""The kernel red qdisc's options (kernel/red.py): tc's arithmetic, byte for byte.

tests/data/red_tc_options.json holds TCA_OPTIONS as tc 6.1.0 sent them
(strace of ``tc qdisc add ... red <tc_args>``, tests/integration/test_red_matches_tc.py
recaptures them from the tc installed).
"""

import json
import struct
from pathlib import Path

import pytest

from testbed.emulation import aqm
from testbed.kernel import red
from testbed.emulation.netem import NetemBackend, resolve as netem_resolve
from testbed.errors import RealizeError
from testbed.model.impairment import parse_impairment
from testbed.units import Duration

FIXTURE = json.loads((Path(__file__).parents[1] / "data" / "red_tc_options.json").read_text())


def imp(**kw):
    return parse_impairment(kw, file="t.yaml", path="links[0]")


def attrs(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        length, kind = struct.unpack_from("=HH", data, i)
        out[kind] = data[i + 4:i + length]
        i += (length + 3) & ~3
    return out


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: " ".join(c["tc_args"][1:]))
def test_the_options_are_the_bytes_tc_sends(case):
    p = red.RedParams(**case["params"])
    assert p.tc_args() == case["tc_args"]
    assert red.options(p, FIXTURE["tick_in_usec"]).hex() == case["options_hex"]


def test_the_fixture_covers_the_wrapped_table_and_tc_s_own_burst():
    """Scell_log >= 24 is where tc's ``i << clog`` overflows; and one case is not ours."""
    scell = [attrs(bytes.fromhex(c["options_hex"]))[red.TCA_RED_PARMS][14]
             for c in FIXTURE["cases"]]
    assert max(scell) >= 24 and min(scell) < 24
    assert any(c["params"]["probability"] != red.PROBABILITY for c in FIXTURE["cases"])


def test_the_link_engine_s_red_in_kernel_form():
    """min L/12, max L/4 (bytes), 2 % at max, w = 1/512: as testbed's engine RED."""
    p = red.red_params(2_000_000, 6_250_000, 1514, ecn=True)
    assert (p.limit, p.qth_min, p.qth_max, p.avpkt) == (2_000_000, 166_666, 500_000, 1514)
    got = attrs(red.options(p, 15.625))
    limit, qmin, qmax, wlog, plog, _scell, flags = struct.unpack("=IIIBBBB",
                                                                 got[red.TCA_RED_PARMS])
    assert (limit, qmin, qmax, wlog, flags) == (2_000_000, 166_666, 500_000, 9, 0)
    # Plog: the smallest with probability / (max - min) * 2^Plog > 1
    assert 1.0 < 0.02 / (qmax - qmin) * 2**plog <= 2.0
    assert struct.unpack("=I", got[red.TCA_RED_MAX_P]) == (int(0.02 * 2**32),)
    assert struct.unpack("=II", got[red.TCA_RED_FLAGS]) == (red.TC_RED_ECN,
                                                            red.RED_SUPPORTED_FLAGS)
    assert len(got[red.TCA_RED_STAB]) == 256
    no_ecn = attrs(red.options(red.red_params(2_000_000, 6_250_000, 1514, ecn=False), 15.625))
    assert struct.unpack("=II", no_ecn[red.TCA_RED_FLAGS])[0] == 0


def test_the_burst_is_the_smallest_tc_turns_into_w_1_512():
    for limit in (19_682, 400_000, 2_000_000, 16_777_215):
        p = red.red_params(limit, 1_250_000, 1514, ecn=False)
        assert red.eval_ewma(p.qth_min, p.burst, 1514) == 9
        assert (red.eval_ewma(p.qth_min, p.burst - 1, 1514) or 0) < 9


def test_buffers_the_kernel_s_red_cannot_take_are_refused_with_the_bound():
    with pytest.raises(RealizeError, match="at least 13 packets"):
        red.red_params(12 * 1514, 1_250_000, 1514, ecn=False)
    with pytest.raises(RealizeError, match="at most 16777215 bytes"):
        red.red_params(16_777_216, 1_250_000, 1514, ecn=False)


def test_the_netem_backend_grafts_red_under_tbf_on_the_link_s_buffer():
    """It refused aqm red ("needs tc red's rate table") before."""
    link = imp(rate="50mbit", delay="20ms", queue="2000000B", aqm="red", ecn=True)
    assert NetemBackend().unsupported(link) == []
    plan = netem_resolve(link, Duration(0.04), 1500)
    assert plan.aqm == red.red_params(2_000_000, 6_250_000, 1514, ecn=True)
    steps = [str(s) for s in NetemBackend().plan("ns", "eth0", link, Duration(0.04), 1500)]
    assert any("aqm: red handle 7466: parent 7463:1 limit 2000000 min 166666 max 500000 "
               "avpkt 1514 burst 280 probability 0.02 bandwidth 50000000bit ecn" in s
               for s in steps), steps
    # a limit in packets is the buffer, as in the link engine
    small = netem_resolve(imp(rate="10mbit", aqm={"kind": "red", "limit": 100}), None, 1500)
    assert (small.aqm.limit, small.aqm.rate_bytes, small.aqm.ecn) == (151_400, 1_250_000, False)
    assert aqm.KERNEL_KINDS == ("codel", "fq_codel", "pie", "red")
