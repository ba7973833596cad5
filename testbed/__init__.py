"""testbed: network experiments on real Linux kernel stacks.

The Python API mirrors the CLI::

    import testbed
    with testbed.up("topologies/dumbbell.yaml") as net:
        print(net["h1"].run(["ping", "-c", "3", "h3"]).stdout)
"""

from testbed.errors import (ConfigError, PreflightError, RealizeError, TestbedError,
                            WorkloadError)
from testbed.version import __version__
from testbed.instance.network import Network, Node, attach, load_topology, up

__all__ = ["ConfigError", "Network", "Node", "PreflightError", "RealizeError",
           "TestbedError", "WorkloadError", "__version__", "attach", "load_topology", "up"]
