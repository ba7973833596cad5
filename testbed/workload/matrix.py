"""Sweeps: the cartesian product of ``matrix:`` values, each repeated.

``--set NAME=VALUE`` pins a variable: if it is also a matrix dimension, that
dimension collapses to the given value. A name that neither the workload nor
its topology knows is an error, before any run.

Each run is a ``RunPoint`` with an id that is the same on every machine: a
hash of the canonical JSON of the workload's name and the point's variables
(its ``key``, shared by its repetitions) followed by ``-r<repetition>``. No
file path, time or host goes into it, so a worker that expands the same
workload with the same ``--set`` and ``--repeat`` finds the same ids. Its seed
is derived from the workload's ``seed:``, the key and the repetition, so adding
a value to the matrix does not change the seeds of the other points.

``load_matrix`` also hashes the whole expansion (every id and its variables,
the workload and topology text as rendered for each point): runs with the
same ``Matrix.hash`` were asked for by the same sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.model import document as tb_loader
from testbed.workload.loader import (WorkloadSource, check_matrix_keys, check_overrides,
                                     load_source, load_workload)

KEY_LENGTH = 12       # hex digits of a point's key (48 bits: no collision in any real sweep)
HASH_LENGTH = 16      # hex digits of a matrix hash


def canonical_json(value: Any) -> str:
    """One text for one value: sorted keys, no spaces, UTF-8; non-JSON scalars (YAML
    dates) as their str()."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str)


def digest(value: Any, length: int) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``value``'s canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def point_key(workload: str, variables: dict[str, Any]) -> str:
    """The id of a point of the matrix, the same for all its repetitions."""
    return digest({"workload": workload, "variables": variables}, KEY_LENGTH)


def derive_seed(base_seed: int, key: str, repetition: int) -> int:
    """A 31-bit seed for one run, from the workload's ``seed:``, the point and the repetition."""
    raw = hashlib.sha256(canonical_json([base_seed, key, repetition]).encode("utf-8")).digest()
    return int.from_bytes(raw[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class RunPoint:
    """One run: the variables it renders with, and which repetition it is."""

    variables: dict[str, Any]
    point: dict[str, Any]
    repetition: int
    index: int
    workload: str = ""
    base_seed: int = 1

    @property
    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in self.point.items()]
        parts.append(f"rep{self.repetition}")
        return ",".join(parts)

    @property
    def key(self) -> str:
        return point_key(self.workload, self.variables)

    @property
    def id(self) -> str:
        return f"{self.key}-r{self.repetition}"

    @property
    def seed(self) -> int:
        return derive_seed(self.base_seed, self.key, self.repetition)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "index": self.index, "label": self.label,
                "point": self.point, "repetition": self.repetition, "seed": self.seed,
                "variables": self.variables}


@dataclass(frozen=True)
class Matrix:
    """Every run a workload asks for, and the hash that names this expansion."""

    workload: str
    points: tuple[RunPoint, ...]
    hash: str

    def listing(self) -> dict[str, Any]:
        """What ``testbed matrix --json`` prints."""
        return {"workload": self.workload, "matrix_hash": self.hash, "count": len(self.points),
                "points": [p.as_json() for p in self.points]}

    def lines(self) -> list[str]:
        """What ``testbed matrix`` prints: a header, then one run a line."""
        head = f"{self.workload}: {len(self.points)} runs, matrix {self.hash}"
        return [head] + [f"{p.index:>5}  {p.id}  seed {p.seed:>10}  {p.label}" for p in self.points]


def workload_header(source: WorkloadSource) -> tuple[str, int]:
    """The workload's name and ``seed:`` as its defaults render them (name: the file's stem
    when absent, as in ``parse_workload``)."""
    _, data = tb_loader.render_lenient(source.text, str(source.file))
    top = data if isinstance(data, dict) else {}
    seed = top.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        seed = 1          # the strict load of each point reports it
    return str(top.get("name") or source.file.stem), seed


def expand_points(source: WorkloadSource, overrides: dict[str, Any] | None = None,
                  repeat: int | None = None) -> list[RunPoint]:
    """Every run the workload asks for, in a stable order: repetitions interleaved (every
    point's first repetition, then every point's second, ...), so that a drift of the
    host over a long sweep spreads over all points instead of landing on the last."""
    overrides = dict(overrides or {})
    dims = {k: v for k, v in source.matrix.items() if k not in overrides}
    reps = repeat if repeat is not None else source.repeat
    if reps < 1:
        raise ValueError("repeat must be at least 1")
    combos = itertools.product(*dims.values()) if dims else [()]
    at_points = [{**source.defaults, **dict(zip(dims, c)), **overrides} for c in combos]
    if overrides:
        check_overrides(source, overrides, at_points)
    check_matrix_keys(source, at_points)
    name, seed = workload_header(source)
    points: list[RunPoint] = []
    keys = list(dims)
    combos = list(itertools.product(*(dims[k] for k in keys))) if keys else [()]
    for rep in range(reps):
        for combo in combos:
            point = dict(zip(keys, combo))
            variables = {**source.defaults, **point, **overrides}
            points.append(RunPoint(variables=variables, point=point, repetition=rep,
                                   index=len(points), workload=name, base_seed=seed))
    return points


def rendered_texts(source: WorkloadSource, variables: dict[str, Any]) -> dict[str, str]:
    """The workload and its topology file as rendered for one point (strict: a point that
    cannot be rendered is an error now, not on a worker). Keyed by the name as written, so
    that where the files lie does not matter."""
    wl = load_workload(source.file, variables, source=source)
    texts = {"workload": wl.rendered_text}
    if wl.topology_path is not None:
        rendered, _ = tb_loader.render(tb_loader.read(wl.topology_path), str(wl.topology_path),
                                       wl.variables)
        texts["topology"] = rendered
    return texts


def matrix_hash(points: list[RunPoint], texts: dict[str, dict[str, str]]) -> str:
    """The hash of an expansion: each run's id and variables, and the rendered text of each
    point (``texts`` by point key)."""
    return digest({"runs": [[p.id, p.variables] for p in points],
                   "texts": [texts[k] for k in sorted(texts)]}, HASH_LENGTH)


def load_matrix(path: str | Path, overrides: dict[str, Any] | None = None,
                repeat: int | None = None) -> Matrix:
    """Expand the workload at ``path`` and hash the expansion."""
    source = load_source(path)
    points = expand_points(source, overrides, repeat)
    texts: dict[str, dict[str, str]] = {}
    for p in points:
        if p.key not in texts:
            texts[p.key] = rendered_texts(source, p.variables)
    workload = points[0].workload
    return Matrix(workload=workload, points=tuple(points), hash=matrix_hash(points, texts))


def matrix_listing(path: str | Path, overrides: dict[str, Any] | None = None,
                   repeat: int | None = None) -> dict[str, Any]:
    """``testbed matrix WORKLOAD [--set ...] [--repeat N] --json``."""
    return load_matrix(path, overrides, repeat).listing()
