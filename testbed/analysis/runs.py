"""Finding and loading run directories, and refusing what cannot be compared.

A run directory is any directory holding ``result.json`` (written by
``testbed run``). Paths given by the user are run directories or trees of
them (``results/cubic-vs-bbr/``). Only files are read; nothing needs root.
Time series (``tcp_info.csv``, ``qdisc.csv``) are read lazily.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from testbed.errors import ResultsError
from testbed.results import SCHEMA_VERSION, TCPINFO_COLUMNS
from testbed.shape import ListOf, MapOf, Obj, OneOf, Opt, Shape, parse_json, problem

# What the analysis reads of result.json and manifest.json, with the types it relies on
# (other keys are kept, not checked). A file that differs is a ResultsError naming the field.
# tcp_info.csv's columns that hold words; the others are numbers
TCPINFO_TEXT = ("flow", "node", "state", "ca_state", "cc", "src", "dst")
FLOW_SHAPE = Obj({
    "name": str, "from": Opt(str), "to": Opt(str), "protocol": Opt(str), "kind": Opt(str),
    "cc": Opt(OneOf((str, ListOf(str)))), "cc_requested": Opt(str),
    "goodput_bps": Opt(float), "loss": Opt(float), "fct_s": Opt(ListOf(Opt(float))),
    "tcp_events": Opt(Obj({"retransmissions": Opt(int), "fast_recoveries": Opt(int),
                           "loss_episodes": Opt(int), "rtos": Opt(int)})),
}, required=("name",))
RESULT_SHAPE = Obj({
    "schema_version": int, "workload": str, "run_id": Opt(str), "status": str,
    "partial": Opt(bool), "suspect": Opt(bool), "suspect_reasons": Opt(ListOf(str)),
    "error": Opt(str), "variables": Opt(MapOf(object)), "flows": ListOf(FLOW_SHAPE),
    "summary": Opt(Obj({"qdisc_drops": Opt(MapOf(Obj({"drops": Opt(float),
                                                       "marks": Opt(float)})))})),
}, required=("schema_version", "workload", "status", "flows"))
_QDISC = Obj({"kind": Opt(str), "dev": Opt(str), "bytes": Opt(float),
              "options": Opt(Obj({"rate": Opt(float)}))})
_NODES = Opt(MapOf(Obj({"qdiscs": Opt(OneOf((ListOf(_QDISC), str)))})))  # str: tc's own text
MANIFEST_SHAPE = Obj({
    "testbed": Opt(Obj({"link_backend": Opt(str)})), "kernel": Opt(Obj({"release": Opt(str)})),
    "tools": Opt(MapOf(object)), "host": Opt(MapOf(object)), "cc_in_use": Opt(MapOf(object)),
    "command": Opt(ListOf(object)), "nodes_before": _NODES, "nodes_after": _NODES,
    # which run of which expansion (testbed merge), and which engine's job ran it
    "matrix": Opt(Obj({"hash": Opt(str), "count": Opt(int), "index": Opt(int),
                       "point_id": Opt(str), "point_key": Opt(str), "seed": Opt(int)})),
    "engine": Opt(MapOf(object)),
})


def _num(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _strict_num(text: str, path: Path, line: int, column: str) -> float | None:
    """A CSV cell as a number (None when empty); ``ResultsError`` when it is not one."""
    value = _num(text)
    if value is None and text:
        raise ResultsError(f"line {line}, column {column}: {text[:40]!r} is not a number "
                           "(not as 'testbed run' writes it)", file=str(path))
    return value


def _check_columns(path: Path, header: list[str] | None, rows: list[dict[str, str]],
                   columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in (header or [])]
    if missing:
        raise ResultsError(f"no column {', '.join(missing[:3])}"
                           f"{' ...' if len(missing) > 3 else ''} (not as 'testbed run' "
                           "writes it)", file=str(path))
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise ResultsError(f"line {line} does not have the header's {len(header or [])} "
                               "fields (not as 'testbed run' writes it)", file=str(path))


def read_csv(path: Path, columns: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of a run's CSV file (none if it is absent); ``ResultsError`` if it is not CSV
    text or, given ``columns``, lacks one of them or has a row of another length."""
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            if columns:
                _check_columns(path, reader.fieldnames and list(reader.fieldnames), rows, columns)
            return rows
    except UnicodeDecodeError as exc:
        raise ResultsError(f"not UTF-8 text (byte {exc.start})", file=str(path)) from None
    except csv.Error as exc:
        raise ResultsError(f"not CSV as 'testbed run' writes it: {exc}", file=str(path)) from None


@dataclass
class Run:
    """One run directory: its result, manifest and (lazily) time series."""

    path: Path
    result: dict[str, Any]
    manifest: dict[str, Any]
    _tcp_info: list[dict[str, Any]] | None = field(default=None, repr=False)
    _tcp_events: list[dict[str, Any]] | None = field(default=None, repr=False)
    _qdisc: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return str(self.result.get("run_id") or self.path.name)

    @property
    def workload(self) -> str:
        return str(self.result.get("workload"))

    @property
    def variables(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.result.get("variables") or {}).items()}

    @property
    def flows(self) -> list[dict[str, Any]]:
        return list(self.result.get("flows") or [])

    @property
    def suspect(self) -> bool:
        return bool(self.result.get("suspect"))

    @property
    def partial(self) -> bool:
        return bool(self.result.get("partial")) or self.result.get("status") != "complete"

    @property
    def link_backend(self) -> str | None:
        return (self.manifest.get("testbed") or {}).get("link_backend")

    def tcp_info(self) -> list[dict[str, Any]]:
        """Rows of tcp_info.csv, numbers as floats (None when empty). Every finished run
        writes it: missing, without its columns or with a word where a number goes, it is
        a ResultsError naming the file (metrics would otherwise just disappear)."""
        if self._tcp_info is None:
            path = self.path / "tcp_info.csv"
            if not path.exists() and not self.partial:
                raise ResultsError("missing: every run 'testbed run' finished writes it",
                                   file=str(path))
            rows = []
            for line, r in enumerate(read_csv(path, ("flow",) + TCPINFO_COLUMNS), start=2):
                row: dict[str, Any] = {k: r[k] for k in TCPINFO_TEXT if k in r}
                for k in TCPINFO_COLUMNS:
                    if k not in TCPINFO_TEXT:
                        row[k] = _strict_num(r[k], path, line, k)
                rows.append(row)
            self._tcp_info = rows
        return self._tcp_info

    def tcp_events(self) -> list[dict[str, Any]]:
        """Rows of tcp_events.csv (the kernel's tracepoints; none when not recorded)."""
        if self._tcp_events is None:
            path = self.path / "tcp_events.csv"
            rows = read_csv(path) if path.exists() else []
            self._tcp_events = [{**r, **{k: _num(r.get(k)) for k in ("t", "sport", "dport", "cwnd")}}
                                for r in rows]
        return self._tcp_events

    def qdisc(self) -> list[dict[str, Any]]:
        if self._qdisc is None:
            rows = []
            for r in read_csv(self.path / "qdisc.csv"):
                row: dict[str, Any] = {k: r.get(k) for k in ("node", "ifname", "kind", "handle")}
                for k in ("t", "bytes", "packets", "drops", "backlog", "qlen", "marks",
                          "aqm_drops", "sojourn_ms"):
                    row[k] = _num(r.get(k))
                rows.append(row)
            self._qdisc = rows
        return self._qdisc


def _read_json(file: Path) -> Any:
    """The JSON in ``file``; ``ResultsError`` naming the file when it cannot be had."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ResultsError(f"cannot read it: {exc.strerror}", file=str(file)) from None
    value, why = parse_json(data)
    if why is not None:
        raise ResultsError(why, file=str(file))
    return value


def _check(value: Any, shape: Shape, file: Path, what: str) -> None:
    found = problem(value, shape)
    if found is not None:
        path, message = found
        raise ResultsError(f"{message} (not {what} as 'testbed run' writes it)",
                           file=str(file), path=path or None)


def load_run(path: Path) -> Run:
    """One run directory; ``ResultsError`` naming the file (and the field) for files that
    cannot be read, are not the shape ``testbed run`` writes, or have an unknown schema."""
    path = Path(path)
    rfile = path / "result.json"
    result = _read_json(rfile)
    _check(result, Obj({"schema_version": object}, ("schema_version",)), rfile, "a result")
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"result schema version {version!r} is unknown to this testbed (it "
                           f"reads version {SCHEMA_VERSION}); use the testbed version that wrote "
                           "it, or re-run the workload", file=str(rfile))
    _check(result, RESULT_SHAPE, rfile, "a result")
    manifest: dict[str, Any] = {}
    mfile = path / "manifest.json"
    if mfile.exists():
        manifest = _read_json(mfile)
        _check(manifest, MANIFEST_SHAPE, mfile, "a manifest")
    return Run(path=path, result=result, manifest=manifest)


def find_run_dirs(paths: Iterable[Path | str]) -> list[Path]:
    """Every run directory at or under ``paths``, in a stable order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ResultsError(f"{p}: no such file or directory")
        if p.is_file():
            if p.name == "result.json":
                found.append(p.parent)
                continue
            raise ResultsError(f"{p}: not a run directory (give a directory holding result.json, "
                               "or a directory of runs)")
        if (p / "result.json").exists():
            found.append(p)
        else:
            found.extend(sorted(r.parent for r in p.rglob("result.json")))
    unique = list(dict.fromkeys(d.resolve() for d in found))
    if not unique:
        cut = interrupted_run_dirs(paths)
        why = (f"; {len(cut)} run director{'y' if len(cut) == 1 else 'ies'} ha{'s' if len(cut) == 1 else 've'} "
               f"none: still running, or stopped before writing it (killed?), e.g. {cut[0]}") if cut else ""
        raise ResultsError(f"no runs found under {', '.join(map(str, paths))}: a run directory holds "
                           f"result.json (written by 'testbed run'){why}")
    return unique


def interrupted_run_dirs(paths: Iterable[Path | str]) -> list[Path]:
    """Run directories with a manifest but no result.json: runs ended before their end
    (kill -9, power loss); an interrupted run that could still write says so in result.json."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [m.parent for m in sorted(p.rglob("manifest.json"))
                    if not (m.parent / "result.json").exists()]
    return list(dict.fromkeys(out))


@dataclass
class RunSet:
    """The runs being compared, and those left out (with why)."""

    runs: list[Run]
    excluded_suspect: list[Run]
    excluded_partial: list[Run]
    workload: str
    interrupted: list[Path] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.runs) + len(self.excluded_suspect) + len(self.excluded_partial)

    def exclusion_note(self) -> str:
        parts = []
        if self.excluded_suspect:
            parts.append(f"{len(self.excluded_suspect)} suspect (host saturated, data lost, or "
                         "conditions not as named; --include-suspect)")
        if self.excluded_partial:
            parts.append(f"{len(self.excluded_partial)} partial/failed (--include-partial)")
        if self.interrupted:
            parts.append(f"{len(self.interrupted)} without result.json (running, or killed?)")
        return "excluded: " + ", ".join(parts) if parts else "nothing excluded"


def load_runs(paths: Iterable[Path | str], *, include_suspect: bool = False,
              include_partial: bool = False) -> RunSet:
    """Load and check the runs at ``paths``: one workload, known schema, something left."""
    paths = list(paths)
    runs = [load_run(d) for d in find_run_dirs(paths)]
    workloads: dict[str, list[Run]] = {}
    for r in runs:
        workloads.setdefault(r.workload, []).append(r)
    if len(workloads) > 1:
        desc = "; ".join(f"{w} ({len(rs)} run{'s' if len(rs) > 1 else ''}, e.g. {rs[0].path})"
                         for w, rs in sorted(workloads.items()))
        raise ResultsError(f"runs of different workloads are mixed: {desc}. Compare one workload "
                           "at a time (give its results directory)")
    kept, suspect, partial = [], [], []
    for r in runs:
        if r.partial and not include_partial:
            partial.append(r)
        elif r.suspect and not include_suspect:
            suspect.append(r)
        else:
            kept.append(r)
    rs = RunSet(kept, suspect, partial, next(iter(workloads)), interrupted_run_dirs(paths))
    if not kept:
        raise ResultsError(f"all {rs.total} run(s) of {rs.workload} were left out ({rs.exclusion_note()}); "
                           "nothing to compare")
    return rs
