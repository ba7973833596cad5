"""Workloads: what traffic an experiment runs, loaded from templated YAML.

``load_workload`` reads a file into a typed ``Workload`` for one set of
variables; ``expand_points`` turns ``matrix:``/``repeat:`` into the list of
runs to do.
"""

from testbed.workload.loader import WorkloadSource, load_source, load_workload
from testbed.workload.matrix import RunPoint, expand_points
from testbed.workload.model import (Capture, Flow, RequestResponse, Sampling,
                                    Workload, FLOW_PROTOCOLS)

__all__ = ["Capture", "Flow", "FLOW_PROTOCOLS", "RequestResponse", "RunPoint", "Sampling",
           "Workload", "WorkloadSource", "expand_points", "load_source", "load_workload"]
