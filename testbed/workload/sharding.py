"""Which runs of a matrix this worker does, and which job of which engine it is.

A sweep past one machine lists its runs once (``testbed matrix --json``) and
starts one worker per run or per shard. A worker expands the same workload
with the same ``--set``/``--repeat`` and picks its share: ``--point ID`` (a
run id, or a point's key for all its repetitions), ``--index N`` (as
Kubernetes' ``JOB_COMPLETION_INDEX`` counts), or ``--shard I/N`` (every N-th
run from the I-th, I from 1: the N shards partition the list exactly, and the
repetitions of one point land on different workers).

``engine_identity`` reads the job engine's environment (Kubernetes Indexed
Jobs, GitHub Actions) so that each run directory says which job made it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from testbed.errors import ConfigError
from testbed.workload.matrix import Matrix, RunPoint

MAX_JOBS = 256          # GitHub Actions: a matrix makes at most 256 jobs per workflow run
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
# what each engine sets in a job's environment that says which job it is
ENGINE_VARIABLES = {
    "kubernetes": ("JOB_NAME", "JOB_COMPLETION_INDEX", "HOSTNAME", "NODE_NAME", "POD_NAME"),
    "github-actions": ("GITHUB_REPOSITORY", "GITHUB_WORKFLOW", "GITHUB_RUN_ID",
                       "GITHUB_RUN_ATTEMPT", "GITHUB_JOB", "RUNNER_NAME", "TESTBED_JOB_MATRIX"),
}


def parse_shard(text: str, option: str = "--shard") -> tuple[int, int]:
    """``"I/N"`` with 1 <= I <= N."""
    m = _SHARD.fullmatch(text)
    if not m:
        raise ConfigError(f"{option} {text!r}: expected I/N, e.g. 2/5 (shard 2 of 5, from 1)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise ConfigError(f"{option} {text!r}: shard I of N needs 1 <= I <= N")
    return i, n


def shard(points: Sequence[RunPoint], i: int, n: int) -> list[RunPoint]:
    """Shard ``i`` of ``n`` (from 1): the i-th of n contiguous blocks, as even as can be.
    Runs come repetition by repetition (``expand_points``), so a point's repetitions fall
    in different blocks: one slow or broken worker does not hold all of a point."""
    count = len(points)
    return list(points[(i - 1) * count // n: i * count // n])


def _by_id(points: Sequence[RunPoint], point_id: str) -> list[RunPoint]:
    wanted = point_id.strip()
    found = [p for p in points if p.id == wanted] or [p for p in points if p.key == wanted]
    if not found:
        sample = ", ".join(p.id for p in points[:3])
        raise ConfigError(f"--point {point_id}: no run of this matrix has that id or key "
                          f"({len(points)} runs, e.g. {sample}; 'testbed matrix' lists them; "
                          "give the same --set and --repeat as when listing)")
    return found


def select_points(points: Sequence[RunPoint], *, point_id: str | None = None,
                  index: int | None = None, shard_spec: str | None = None) -> list[RunPoint]:
    """The runs one worker does: all of them, or those one selector picks."""
    given = [name for name, v in (("--point", point_id), ("--index", index),
                                  ("--shard", shard_spec)) if v is not None]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: give one of them")
    if point_id is not None:
        return _by_id(points, point_id)
    if index is not None:
        if not 0 <= index < len(points):
            raise ConfigError(f"--index {index}: this matrix has {len(points)} runs "
                              f"(indexes 0 to {len(points) - 1})")
        return [points[index]]
    if shard_spec is not None:
        i, n = parse_shard(shard_spec)
        if n > len(points):
            raise ConfigError(f"--shard {shard_spec}: more shards than the matrix's "
                              f"{len(points)} runs")
        return shard(points, i, n)
    return list(points)


def point_from_env(env: Mapping[str, str], var: str = INDEX_VARIABLE) -> int:
    """The run index a job engine gave this worker (``--point-from-env [VAR]``)."""
    text = env.get(var)
    if text is None:
        raise ConfigError(f"--point-from-env: {var} is not set (Kubernetes sets "
                          f"{INDEX_VARIABLE} in pods of an Indexed Job)")
    if not text.strip().isdigit():
        raise ConfigError(f"--point-from-env: {var}={text!r} is not a run index (0, 1, 2, ...)")
    return int(text)


def selection_from_env(env: Mapping[str, str], var: str = INDEX_VARIABLE,
                       shards: int | None = None) -> dict[str, Any]:
    """``--point-from-env [VAR] [--shards N]`` as keywords of ``select_points``: the engine's
    index is a run index, or with ``shards`` the index of a shard (from 0, as Kubernetes counts)."""
    index = point_from_env(env, var)
    if shards is None:
        return {"index": index}
    if shards < 1 or index >= shards:
        raise ConfigError(f"--shards {shards}: {var}={index} is not a shard of {shards} "
                          "(indexes 0 to shards-1; set the Job's completions to --shards)")
    return {"shard_spec": f"{index + 1}/{shards}"}


def job_matrix(matrix: Matrix, max_jobs: int = MAX_JOBS) -> list[dict[str, str]]:
    """One CI job per run while they fit in ``max_jobs``, else ``max_jobs`` shards.
    Each entry names the job and the worker's selector (``select``: argv words)."""
    if max_jobs < 1:
        raise ConfigError(f"--max-jobs {max_jobs}: must be at least 1")
    count = len(matrix.points)
    if count <= max_jobs:
        return [{"job": f"{p.index:04d} {p.label}", "select": f"--point {p.id}"}
                for p in matrix.points]
    return [{"job": f"shard {i}/{max_jobs}", "select": f"--shard {i}/{max_jobs}"}
            for i in range(1, max_jobs + 1)]


def engine_identity(env: Mapping[str, str]) -> dict[str, Any]:
    """Which engine's job this process is, from its environment: ``{"engine": None}`` when
    neither Kubernetes nor GitHub Actions set theirs. For ``manifest.json`` (key ``engine``)."""
    if env.get("GITHUB_ACTIONS") == "true":
        engine = "github-actions"
    elif env.get("KUBERNETES_SERVICE_HOST") or env.get(INDEX_VARIABLE) is not None:
        engine = "kubernetes"
    else:
        return {"engine": None}
    found = {k.lower(): env[k] for k in ENGINE_VARIABLES[engine] if k in env}
    return {"engine": engine, **found}


def sweep_listing(matrix: Matrix, max_jobs: int = MAX_JOBS) -> dict[str, Any]:
    """``testbed matrix --json [--max-jobs N]``: the listing and the CI jobs that cover it."""
    return {**matrix.listing(), "jobs": job_matrix(matrix, max_jobs)}


def check_matrix_hash(matrix: Matrix, expected: str, option: str = "--expect-matrix") -> None:
    """A worker refuses to run when its expansion is not the one that was listed (another
    version of the workload or topology, other --set or --repeat): its runs would not merge."""
    if matrix.hash != expected.strip():
        raise ConfigError(f"{option} {expected}: this worker's expansion of {matrix.workload} is "
                          f"matrix {matrix.hash} ({len(matrix.points)} runs); the files or the "
                          "--set/--repeat differ from those the sweep was listed with")


@dataclass(frozen=True)
class Selection:
    """A worker's selector options as the CLI parsed them (``None``: not given)."""

    point_id: str | None = None          # --point
    index: int | None = None             # --index
    shard: str | None = None             # --shard I/N
    from_env: str | None = None          # --point-from-env [VAR]
    shards: int | None = None            # --shards N (with --point-from-env)
    expect_matrix: str | None = None     # --expect-matrix HASH


def worker_points(matrix: Matrix, selection: Selection, env: Mapping[str, str]) -> list[RunPoint]:
    """The runs this worker does (``testbed run`` with its selector options), after checking
    that its expansion is the listed one."""
    if selection.expect_matrix is not None:
        check_matrix_hash(matrix, selection.expect_matrix)
    if selection.shards is not None and selection.from_env is None:
        raise ConfigError("--shards goes with --point-from-env (use --shard I/N otherwise)")
    if selection.from_env is None:
        return select_points(matrix.points, point_id=selection.point_id, index=selection.index,
                             shard_spec=selection.shard)
    others = [name for name, v in (("--point", selection.point_id), ("--index", selection.index),
                                   ("--shard", selection.shard)) if v is not None]
    if others:
        raise ConfigError(f"--point-from-env and {others[0]}: give one of them")
    return select_points(matrix.points,
                         **selection_from_env(env, selection.from_env, selection.shards))


def run_record(matrix: Matrix, point: RunPoint, env: Mapping[str, str]) -> dict[str, Any]:
    """What ``testbed run`` adds to one run's manifest.json (keys ``matrix`` and ``engine``);
    ``testbed merge`` reads it back."""
    return {"matrix": {"hash": matrix.hash, "count": len(matrix.points), "index": point.index,
                       "point_id": point.id, "point_key": point.key, "seed": point.seed},
            "engine": engine_identity(env)}
