"""Grouping runs into comparable rows, statistics per row, and significance.

Runs are grouped by the workload variables whose values differ among them
(the matrix point, including dimensions pinned with ``--set``); repetitions of
one point form one group. ``by`` splits groups further by a flow attribute
(``cc``, ``flow``, ``from``, ``to``, ``protocol``), e.g. the CUBIC and the BBR
flow of one shared run; when flows of different congestion control share runs
and no ``by`` is given, groups are split by ``cc`` (and ``note`` says so), as
their pooled mean describes no flow. Each row holds one Estimate (mean, 95 % CI) per metric
over its runs.

``Summary.select`` resolves ``metric[key=value, ...]`` selectors for
assertions: variables pick runs, flow attributes pick flows within them.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from testbed.analysis.metrics import FLOW_KEYS, METRICS, RunView, flow_attr
from testbed.analysis.runs import RunSet
from testbed.analysis.stats import Estimate, TestResult, mann_whitney_u, mean_ci
from testbed.errors import ConfigError
from testbed.analysis.expr import UNITS

_QUANTITY = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|-?\.[0-9]+)\s*([a-zA-Z%]*)\s*")


def normalize(value: object) -> tuple[str, Any]:
    """A comparable form of a variable or selector value: ``1%`` == ``1.0%``, ``100mbit`` == ``100Mbit``."""
    text = str(value).strip()
    m = _QUANTITY.fullmatch(text)
    if m:
        unit = m.group(2).lower()
        if unit in UNITS:
            kind, scale = UNITS[unit]
            return kind, round(float(m.group(1)) * scale, 12)
        if unit == "":
            return "number", round(float(m.group(1)), 12)
    return "text", text.lower()


def mixed_cc(views: Sequence[RunView]) -> bool:
    """Whether some run has flows of more than one congestion control."""
    return any(len({flow_attr(f, "cc") for f in v.flows if f.get("protocol", "tcp") == "tcp"}) > 1
               for v in views)


def sort_key(value: str) -> tuple[int, Any]:
    """Quantities by value, then text; text that starts with a number (``0.25bdp``,
    ``16bdp``) by its unit, then by that number, not character by character."""
    kind, v = normalize(value)
    if kind != "text":
        return (0, v)
    m = _QUANTITY.match(v)
    if m:
        return (1, (m.group(2) + v[m.end():], float(m.group(1))))
    return (1, (v, 0.0))


@dataclass
class Row:
    """One group (and split): its labels, runs, the flows picked in each, estimates."""

    labels: dict[str, str]
    views: list[RunView]
    flows: list[list[str]]
    estimates: dict[str, Estimate] = field(default_factory=dict)

    def values(self, metric: str) -> list[float | None]:
        fn = METRICS[metric].fn
        return [fn(v, names) if names or not METRICS[metric].per_flow else None
                for v, names in zip(self.views, self.flows)]

    def estimate(self, metric: str) -> Estimate:
        if metric not in self.estimates:
            self.estimates[metric] = mean_ci(self.values(metric))
        return self.estimates[metric]

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.labels.items()) or "all runs"


@dataclass
class Comparison:
    metric: str
    key: str
    a: Row
    b: Row
    test: TestResult | None

    @property
    def ratio(self) -> float | None:
        ea, eb = self.a.estimate(self.metric), self.b.estimate(self.metric)
        if ea.mean is None or not eb.mean:
            return None
        return ea.mean / eb.mean


class Summary:
    """Rows of a RunSet, grouped by the varying variables and split by ``by``."""

    def __init__(self, runset: RunSet, by: Sequence[str] = ()) -> None:
        self.runset = runset
        self.views = [RunView(r) for r in runset.runs]
        all_vars = sorted({k for v in self.views for k in v.run.variables})
        for key in by:
            if key not in FLOW_KEYS and key not in all_vars:
                raise ConfigError(f"--by {key}: not a workload variable ({', '.join(all_vars) or 'none'}) "
                                  f"nor a flow attribute ({', '.join(FLOW_KEYS)})")
        self.variables = all_vars
        varying = [k for k in all_vars
                   if len({normalize(v.run.variables.get(k, "")) for v in self.views}) > 1]
        self.dims = varying + [k for k in by if k in all_vars and k not in varying]
        self.flow_by = [k for k in by if k in FLOW_KEYS and k not in all_vars]
        self.note = ""
        if not by and mixed_cc(self.views):
            key = "cc" if "cc" not in all_vars else "flow"
            self.flow_by = [key]
            self.note = (f"flows of different congestion control share runs: split by {key} "
                         f"(pooling them would average unlike flows; --by flow splits further)")
        self.rows = self._rows()

    # ---- grouping ----------------------------------------------------------
    def _rows(self) -> list[Row]:
        groups: dict[tuple[Any, ...], list[RunView]] = {}
        for v in self.views:
            key = tuple(normalize(v.run.variables.get(d, "")) for d in self.dims)
            groups.setdefault(key, []).append(v)
        rows = []
        for views in groups.values():
            labels = {d: views[0].run.variables.get(d, "") for d in self.dims}
            if not self.flow_by:
                rows.append(Row(labels, views, [v.flow_names() for v in views]))
                continue
            splits = sorted({tuple(flow_attr(f, k) or "-" for k in self.flow_by)
                             for v in views for f in v.flows})
            for split in splits:
                picked = [[f["name"] for f in v.flows
                           if tuple(flow_attr(f, k) or "-" for k in self.flow_by) == split] for v in views]
                rows.append(Row({**labels, **dict(zip(self.flow_by, split))}, views, picked))
        rows.sort(key=lambda r: [sort_key(v) for v in r.labels.values()])
        return rows

    # ---- selection (assertions) ------------------------------------------------
    def known_keys(self) -> list[str]:
        return self.variables + [k for k in FLOW_KEYS if k not in self.variables]

    def select(self, selectors: dict[str, str], *, where: str = "") -> Row:
        """The runs and flows ``metric[selectors]`` refers to; ConfigError when unclear."""
        prefix = f"{where}: " if where else ""
        views = list(self.views)
        flow_sel: dict[str, str] = {}
        for key, want in selectors.items():
            if key in self.variables:
                views = [v for v in views if normalize(v.run.variables.get(key, "")) == normalize(want)]
            elif key in FLOW_KEYS:
                flow_sel[key] = want
            else:
                raise ConfigError(f"{prefix}unknown selector {key!r}: use a workload variable "
                                  f"({', '.join(self.variables) or 'none'}) or a flow attribute "
                                  f"({', '.join(FLOW_KEYS)})")
        if flow_sel:  # only runs that have such a flow can be meant
            views = [v for v in views if any(
                all(normalize(flow_attr(f, k) or "") == normalize(w) for k, w in flow_sel.items())
                for f in v.flows)]
        free = [d for d in self.dims if d not in selectors]
        points = {tuple(v.run.variables.get(d, "") for d in free) for v in views}
        if len(points) > 1:
            sample = ", ".join("[" + ",".join(f"{d}={x}" for d, x in zip(free, p)) + "]"
                               for p in sorted(points)[:4])
            raise ConfigError(f"{prefix}selector matches {len(points)} different groups ({sample}"
                              f"{', ...' if len(points) > 4 else ''}); add {', '.join(free)} to the selector")
        flows = [[f["name"] for f in v.flows
                  if all(normalize(flow_attr(f, k) or "") == normalize(w) for k, w in flow_sel.items())]
                 for v in views]
        labels = {**{k: str(w) for k, w in selectors.items()}}
        return Row(labels, views, flows)

    # ---- significance ----------------------------------------------------------
    def comparisons(self, metric: str = "goodput") -> list[Comparison]:
        """Row pairs differing in exactly one label, with a Mann-Whitney U test on ``metric``."""
        out = []
        for a, b in itertools.combinations(self.rows, 2):
            diff = [k for k in a.labels if normalize(a.labels[k]) != normalize(b.labels.get(k, ""))]
            if len(diff) != 1:
                continue
            va = [x for x in a.values(metric) if x is not None and not math.isnan(x)]
            vb = [x for x in b.values(metric) if x is not None and not math.isnan(x)]
            test = mann_whitney_u(va, vb) if va and vb else None
            out.append(Comparison(metric, diff[0], a, b, test))
        return out


def summarize(runset: RunSet, by: Iterable[str] = ()) -> Summary:
    return Summary(runset, list(by))
