"""Sweeps: the cartesian product of ``matrix:`` values, each repeated.

``--set NAME=VALUE`` pins a variable: if it is also a matrix dimension, that
dimension collapses to the given value. A name that neither the workload nor
its topology knows is an error, before any run.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from testbed.workload.loader import WorkloadSource, check_overrides


@dataclass(frozen=True)
class RunPoint:
    """One run: the variables it renders with, and which repetition it is."""

    variables: dict[str, Any]
    point: dict[str, Any]
    repetition: int
    index: int

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.point.items()]
        parts.append(f"rep{self.repetition}")
        return ",".join(parts)


def expand_points(source: WorkloadSource, overrides: dict[str, Any] | None = None,
                  repeat: int | None = None) -> list[RunPoint]:
    """Every run the workload asks for, in a stable order (matrix order, then repetition)."""
    overrides = dict(overrides or {})
    dims = {k: v for k, v in source.matrix.items() if k not in overrides}
    reps = repeat if repeat is not None else source.repeat
    if reps < 1:
        raise ValueError("repeat must be at least 1")
    if overrides:
        combos = itertools.product(*dims.values()) if dims else [()]
        check_overrides(source, overrides,
                        [{**source.defaults, **dict(zip(dims, c)), **overrides} for c in combos])
    points: list[RunPoint] = []
    keys = list(dims)
    for combo in itertools.product(*(dims[k] for k in keys)) if keys else [()]:
        point = dict(zip(keys, combo))
        variables = {**source.defaults, **point, **overrides}
        for rep in range(reps):
            points.append(RunPoint(variables=variables, point=point, repetition=rep,
                                   index=len(points)))
    return points
