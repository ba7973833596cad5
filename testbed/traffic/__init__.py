"""Traffic drivers: small plugins that start servers and clients in the
testbed's namespaces and parse what they report.

``DRIVERS`` is the registry (a literal dict); ``default_driver`` picks one
for a flow that does not name its driver.
"""

from __future__ import annotations

from testbed.traffic.base import Driver, FlowPlan, FlowResult
from testbed.traffic.builtin import BuiltinDriver
from testbed.traffic.iperf3 import Iperf3Driver
from testbed.workload.model import Flow

DRIVERS: dict[str, type[Driver]] = {
    "iperf3": Iperf3Driver,
    "builtin": BuiltinDriver,
}


def default_driver(flow: Flow) -> str:
    """iperf3 for TCP bulk transfers of a duration; the built-in driver for UDP,
    request/response and size-bounded flows.

    A size-bounded flow is a flow completion time experiment: each of its ``count``
    connections sends ``size`` and its FCT is when the receiver has it all. iperf3
    cannot do that (``-n`` is a total over all ``-P`` streams, and its summary is taken
    before the last bytes land), the built-in agent does.
    """
    if flow.driver:
        return flow.driver
    if flow.protocol == "udp" or flow.rr is not None or flow.size is not None:
        return "builtin"
    return "iperf3"


__all__ = ["DRIVERS", "Driver", "FlowPlan", "FlowResult", "default_driver"]
