"""Manifest fields as grouping keys: ``compare --by kernel``, ``--by node``.

A sweep spread over machines may differ in what the runs ran on: the kernel
of each node pool, the node, the engine's job. ``with_manifest_fields`` lends
each run the manifest fields named in ``--by`` as variables, so that the
summary groups by them and assertions select them (``goodput[kernel=6.8.0]``)
like any workload variable. A name is an alias below or a dotted path into
manifest.json (``tools.iperf3``). Workload variables and flow attributes of
the same name win: they are what ``--by`` meant before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from testbed.analysis.metrics import FLOW_KEYS
from testbed.analysis.runs import Run, RunSet
from testbed.errors import ConfigError

# alias -> manifest paths tried in order
ALIASES: dict[str, tuple[str, ...]] = {
    "kernel": ("kernel.release",),
    "machine": ("kernel.machine",),
    "host": ("host.hostname",),
    "node": ("engine.node_name", "host.hostname"),
    "engine": ("engine.engine",),
    "job": ("engine.job_name", "engine.github_job"),
    "link_backend": ("testbed.link_backend",),
    "point_id": ("matrix.point_id",),
    "matrix": ("matrix.hash",),
}


def manifest_value(manifest: dict[str, Any], key: str) -> str | None:
    """The manifest's value for an alias or dotted path, as text; None when absent."""
    for path in ALIASES.get(key, (key,)):
        node: Any = manifest
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, (dict, list)):
            return str(node)
    return None


def manifest_keys(runs: list[Run], keys: Iterable[str]) -> list[str]:
    """The ``keys`` that name manifest fields: not flow attributes, not workload variables."""
    variables = {k for r in runs for k in r.variables}
    return [k for k in dict.fromkeys(keys)
            if k not in FLOW_KEYS and k not in variables and (k in ALIASES or "." in k)]


def _lend(run: Run, keys: list[str]) -> Run:
    values = {k: manifest_value(run.manifest, k) or "" for k in keys}
    result = {**run.result, "variables": {**(run.result.get("variables") or {}), **values}}
    return dataclasses.replace(run, result=result)


def with_manifest_fields(runset: RunSet, keys: Iterable[str]) -> RunSet:
    """``runset`` with the manifest fields among ``keys`` added to each run's variables.
    A field that no run's manifest records is an error naming ``--by``."""
    everything = runset.runs + runset.excluded_suspect + runset.excluded_partial
    fields = manifest_keys(everything, keys)
    for key in fields:
        if all(manifest_value(r.manifest, key) is None for r in runset.runs):
            paths = " or ".join(ALIASES.get(key, (key,)))
            raise ConfigError(f"--by {key}: no run's manifest.json records {paths} "
                              f"(manifest fields: {', '.join(ALIASES)}, or a dotted path)")
    if not fields:
        return runset
    return dataclasses.replace(
        runset, runs=[_lend(r, fields) for r in runset.runs],
        excluded_suspect=[_lend(r, fields) for r in runset.excluded_suspect],
        excluded_partial=[_lend(r, fields) for r in runset.excluded_partial])
