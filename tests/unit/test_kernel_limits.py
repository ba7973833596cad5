"""Validation refuses exactly what the tbf message cannot carry (model/limits.py): a rate or
queue that passed validation used to crash 'up' with ZeroDivisionError or struct.error."""

import pytest
from pyroute2.netlink.rtnl.tcmsg import plugins, tcmsg

from testbed.emulation import tbf
from testbed.model.impairment import Impairment, Queue
from testbed.model.limits import U32_MAX, kernel_limit_problems, lowest_tbf_rate
from testbed.units import Duration, Rate


def encodes(params: tbf.TbfParams) -> bool:
    """Whether pyroute2 can build the RTM_NEWQDISC message tbf.apply sends."""
    options = plugins["tbf"].get_parameters({"rate": params.rate_bytes, "burst": params.burst,
                                             "limit": params.limit})
    msg = tcmsg()
    msg["index"], msg["handle"], msg["parent"] = 1, tbf.HANDLE, tbf.TC_H_ROOT
    msg["attrs"] = [["TCA_KIND", "tbf"], ["TCA_OPTIONS", options]]
    try:
        msg.encode()
    except Exception:  # noqa: BLE001 - ZeroDivisionError, struct.error: what up crashed with
        return False
    return True


def _cases():
    for mtu in (68, 1500, 9000, 65535):
        low = lowest_tbf_rate(mtu)
        for rate_bytes in (low - 1, low, low + 1, 1, 10**6, U32_MAX, U32_MAX + 1):
            for limit in (10**6, U32_MAX, U32_MAX + 1):
                yield mtu, rate_bytes, limit


@pytest.mark.parametrize("mtu, rate_bytes, limit", list(_cases()))
def test_validation_agrees_with_what_pyroute2_can_encode(mtu, rate_bytes, limit):
    imp = Impairment(rate=Rate(rate_bytes * 8.0), queue=Queue(bytes=limit))
    fits = not kernel_limit_problems(imp, None, mtu)
    params = tbf.tbf_params(imp.rate.bps, imp.bottleneck_bytes(None, mtu), mtu)
    assert fits == encodes(params)


def test_lowest_rates():
    assert [lowest_tbf_rate(mtu) * 8 for mtu in (1500, 9000, 65535)] == [96, 528, 3816]


def test_a_default_queue_grows_with_the_round_trip():
    imp = Impairment(rate=Rate(100e6), delay=Duration(1800.0))
    assert kernel_limit_problems(imp, Duration(0.2), 1500) == []
    (key, problem), = kernel_limit_problems(imp, Duration(3600.0), 1500)
    assert key == "delay" and "the default queue (1bdp) is 41.9 GiB" in problem
