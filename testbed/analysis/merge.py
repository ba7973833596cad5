"""Gathering the run directories of one sweep from many workers into one tree.

Each worker of a sweep (a Kubernetes pod, a CI job) writes its runs under its
own results directory; ``merge_runs`` copies them into
``<out>/<workload>/<run>/``, the layout ``compare`` and ``report`` read. It
never moves or overwrites: a run already in ``out`` with the same
``result.json`` is left as it is, one that differs is refused.

It reads ``manifest.json``'s ``matrix`` block, written by ``testbed run`` for
every run: ``hash`` (of the whole expansion), ``count`` (runs in it),
``index`` and ``point_id`` of this run. Runs of different matrix hashes did
not come from one sweep and are refused unless ``allow_mixed``. For each
point id one run is merged (the first complete one, else the latest); the
others are reported as duplicates (a retried pod, a re-run job) and left out,
so that a point is never counted twice. Points with no complete run are
reported as missing or failed; the merge is then incomplete.

Only files are read and written; nothing here needs root.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from testbed.analysis.runs import ResultsError, Run, find_run_dirs, interrupted_run_dirs, load_run
from testbed.results import write_json

REPORT_FILE = "merge-report.json"


@dataclass(frozen=True)
class Entry:
    """One run directory found, with the sweep fields of its manifest."""

    run: Run
    matrix_hash: str | None
    point_id: str | None
    index: int | None
    count: int | None

    @property
    def complete(self) -> bool:
        return not self.run.partial

    @property
    def order(self) -> tuple[int, float, str]:
        """Keeper first: complete before not, then the earliest started."""
        return (0 if self.complete else 1, float(self.run.result.get("started") or 0.0),
                self.run.path.name)


def read_entry(path: Path) -> Entry:
    run = load_run(path)
    block = run.manifest.get("matrix") or {}
    if not isinstance(block, dict):
        raise ResultsError(f"{path}/manifest.json: 'matrix' is not an object")
    index, count = block.get("index"), block.get("count")
    return Entry(run=run, matrix_hash=block.get("hash"), point_id=block.get("point_id"),
                 index=index if isinstance(index, int) else None,
                 count=count if isinstance(count, int) else None)


@dataclass
class Missing:
    """A run of the matrix with no complete run among those merged."""

    matrix_hash: str
    index: int
    point_id: str | None = None       # known when a listing was given
    label: str | None = None
    failed: list[Path] = field(default_factory=list)    # its runs, none complete

    def describe(self) -> str:
        name = f"{self.point_id} ({self.label})" if self.point_id else f"index {self.index}"
        what = f"failed or partial: {', '.join(map(str, self.failed))}" if self.failed else "no run"
        return f"{name} of matrix {self.matrix_hash}: {what}"


@dataclass
class MergeReport:
    """What a merge did and what it found missing; ``complete`` when nothing is."""

    out: Path
    copied: list[tuple[Path, Path]] = field(default_factory=list)
    already: list[Path] = field(default_factory=list)
    duplicates: dict[str, list[Path]] = field(default_factory=dict)   # point id -> left out
    missing: list[Missing] = field(default_factory=list)
    interrupted: list[Path] = field(default_factory=list)
    without_point: list[Path] = field(default_factory=list)
    matrices: dict[str, int] = field(default_factory=dict)             # hash -> runs merged
    allow_partial: bool = False

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def ok(self) -> bool:
        """Complete, or incomplete and told that is fine: the CLI exits 0 when ok."""
        return self.complete or self.allow_partial

    def as_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "complete": self.complete, "ok": self.ok,
                "matrices": self.matrices,
                "copied": [{"from": str(a), "to": str(b)} for a, b in self.copied],
                "already_there": [str(p) for p in self.already],
                "duplicates": {k: [str(p) for p in v] for k, v in self.duplicates.items()},
                "missing": [{"matrix_hash": m.matrix_hash, "index": m.index, "point_id": m.point_id,
                             "label": m.label, "failed": [str(p) for p in m.failed]}
                            for m in self.missing],
                "interrupted": [str(p) for p in self.interrupted],
                "without_point": [str(p) for p in self.without_point]}

    def lines(self) -> list[str]:
        """The report for people, one finding a line."""
        out = [f"merged {len(self.copied)} run(s) into {self.out}"
               + (f" ({len(self.already)} already there)" if self.already else "")]
        for point, paths in self.duplicates.items():
            out.append(f"duplicate: {point}: left out {', '.join(map(str, paths))}")
        out += [f"interrupted (no result.json, not merged): {p}" for p in self.interrupted]
        if self.without_point:
            out.append(f"{len(self.without_point)} run(s) record no matrix point (recorded by an "
                       "older testbed): merged, not checked for completeness")
        out += [f"missing: {m.describe()}" for m in self.missing]
        total = sum(self.matrices.values())
        out.append("complete" if self.complete else
                   f"incomplete: {len(self.missing)} run(s) missing or failed, {total} merged")
        return out


def check_matrices(entries: list[Entry], listing: dict[str, Any] | None, allow_mixed: bool) -> None:
    """Refuse runs of more than one matrix (or not of the listing's), unless told."""
    hashes: dict[str | None, list[Entry]] = {}
    for e in entries:
        hashes.setdefault(e.matrix_hash, []).append(e)
    wanted = listing.get("matrix_hash") if listing else None
    foreign = [h for h in hashes if wanted is not None and h != wanted]
    if allow_mixed or (len(hashes) <= 1 and not foreign):
        return
    desc = "; ".join(f"{h or 'none recorded'}: {len(es)} run(s), e.g. {es[0].run.path}"
                     for h, es in hashes.items())
    against = f" (the listing is of matrix {wanted})" if wanted else ""
    raise ResultsError(f"runs of different matrices{against}: {desc}. They were not asked for "
                       "by one sweep (other workload text, --set or --repeat); merge each apart, "
                       "or pass --allow-mixed")


def pick_keepers(entries: list[Entry]) -> tuple[list[Entry], dict[str, list[Path]]]:
    """One run per point id (complete first, earliest first); the rest by point id."""
    by_point: dict[tuple[str | None, str], list[Entry]] = {}
    keep: list[Entry] = []
    for e in entries:
        if e.point_id is None:
            keep.append(e)
        else:
            by_point.setdefault((e.matrix_hash, e.point_id), []).append(e)
    duplicates: dict[str, list[Path]] = {}
    for (_, point), group in by_point.items():
        group.sort(key=lambda e: e.order)
        keep.append(group[0])
        if len(group) > 1:
            duplicates[point] = [e.run.path for e in group[1:]]
    return keep, duplicates


def find_missing(entries: list[Entry], keep: list[Entry],
                 listing: dict[str, Any] | None) -> list[Missing]:
    """Runs of each matrix seen (or of the listing) with no complete run kept."""
    expected: dict[str, dict[int, Missing]] = {}
    if listing:
        expected[listing["matrix_hash"]] = {
            p["index"]: Missing(listing["matrix_hash"], p["index"], p.get("id"), p.get("label"))
            for p in listing.get("points", [])}
    for e in entries:
        if e.matrix_hash is not None and e.count is not None and e.matrix_hash not in expected:
            expected[e.matrix_hash] = {i: Missing(e.matrix_hash, i) for i in range(e.count)}
    for e in keep:
        slot = expected.get(e.matrix_hash or "", {}).get(e.index) if e.index is not None else None
        if slot is None:
            continue
        if e.complete:
            del expected[slot.matrix_hash][slot.index]
        else:
            slot.failed.append(e.run.path)
    return [m for runs in expected.values() for m in sorted(runs.values(), key=lambda m: m.index)]


def destinations(keep: list[Entry], out: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Where each kept run goes; runs already there (same result.json) apart. Refuses a
    destination that holds a different run, or that two runs would share."""
    plan: list[tuple[Path, Path]] = []
    already: list[Path] = []
    taken: dict[Path, Path] = {}
    for e in keep:
        dest = out / e.run.workload / e.run.path.name
        if dest in taken:
            raise ResultsError(f"{e.run.path} and {taken[dest]} would both be merged as {dest}; "
                               "merge them into different directories")
        taken[dest] = e.run.path
        if dest.resolve() == e.run.path.resolve():
            already.append(dest)
        elif dest.exists():
            if not (dest / "result.json").is_file() or not filecmp.cmp(
                    dest / "result.json", e.run.path / "result.json", shallow=False):
                raise ResultsError(f"{dest} exists and is not {e.run.path}: merge never overwrites; "
                                   "choose another -o or remove it")
            already.append(dest)
        else:
            plan.append((e.run.path, dest))
    return plan, already


def copy_run(src: Path, dest: Path) -> None:
    """Copy a run directory whole, so that a merge cut short leaves nothing that reads as
    a run: into a hidden name, result.json last, then renamed; removed on any error or
    signal. (After a SIGKILL a hidden copy without result.json may stay; the next merge
    of that run replaces it.)"""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.merging")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        shutil.copytree(src, tmp, symlinks=True,
                        ignore=lambda d, names: ["result.json"] if Path(d) == src else [])
        shutil.copy2(src / "result.json", tmp / "result.json")
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_listing(path: Path) -> dict[str, Any]:
    """A ``testbed matrix --json`` listing (``--matrix FILE``)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ResultsError(f"{path}: cannot read the matrix listing: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not a matrix listing ({exc.msg}, line {exc.lineno})") from None
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("matrix_hash"), str) \
            or not isinstance(points, list) \
            or not all(isinstance(p, dict) and isinstance(p.get("index"), int) for p in points):
        raise ResultsError(f"{path}: not a matrix listing (write one with 'testbed matrix --json')")
    return data


def merge_runs(dirs: Iterable[Path | str], out: Path | str, *, allow_partial: bool = False,
               allow_mixed: bool = False, listing: dict[str, Any] | None = None) -> MergeReport:
    """Copy the runs under ``dirs`` into ``out``; check everything before copying anything.

    An incomplete merge still copies what there is; ``allow_partial`` makes it
    ``ok`` (``complete`` still says it is not).
    """
    dirs, out = [Path(d) for d in dirs], Path(out)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"-o {out}: exists and is not a directory")
    entries = [read_entry(d) for d in find_run_dirs(dirs)]
    check_matrices(entries, listing, allow_mixed)
    keep, duplicates = pick_keepers(entries)
    plan, already = destinations(keep, out)
    report = MergeReport(out=out, already=already, duplicates=duplicates,
                         allow_partial=allow_partial,
                         interrupted=interrupted_run_dirs(dirs),
                         without_point=[e.run.path for e in keep if e.point_id is None],
                         missing=find_missing(entries, keep, listing))
    for e in keep:
        key = e.matrix_hash or "none"
        report.matrices[key] = report.matrices.get(key, 0) + 1
    for src, dest in plan:
        copy_run(src, dest)
        report.copied.append((src, dest))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / REPORT_FILE, report.as_json())
    return report
