"""testbed: network experiments on real Linux kernel stacks.

The Python API mirrors the CLI::

    import testbed
    with testbed.up("topologies/dumbbell.yaml") as net:
        print(net["h1"].run(["ping", "-c", "3", "h3"]).stdout)
    testbed.down("dumbbell")   # what `testbed down --name dumbbell` does
    testbed.clean()            # what `testbed clean` does: every instance on the machine

The kernel-facing names are imported on first use: they bring in pyroute2
(~0.3 s), which ``testbed --help``, ``plan`` and ``compare`` do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from testbed.errors import (ConfigError, PreflightError, RealizeError, TestbedError,
                            WorkloadError)
from testbed.version import __version__

if TYPE_CHECKING:
    from testbed.instance.network import Network, Node, attach, load_topology, up
    from testbed.realize.teardown import Cleaned, Teardown, clean, down

__all__ = ["Cleaned", "ConfigError", "Network", "Node", "PreflightError", "RealizeError",
           "Teardown", "TestbedError", "WorkloadError", "__version__", "attach", "clean", "down",
           "load_topology", "up"]

_LAZY = {
    "Network": "testbed.instance.network", "Node": "testbed.instance.network",
    "attach": "testbed.instance.network", "load_topology": "testbed.instance.network",
    "up": "testbed.instance.network",
    "Cleaned": "testbed.realize.teardown", "Teardown": "testbed.realize.teardown",
    "clean": "testbed.realize.teardown", "down": "testbed.realize.teardown",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'testbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
