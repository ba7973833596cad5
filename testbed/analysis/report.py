"""The HTML report: one self-contained file (plots as data URIs, no scripts,
no network), rendered from ``testbed/templates/report.html.j2``, with the
summary table, significance tests, plots and every run's manifest."""

from __future__ import annotations

import base64
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from testbed.analysis import plots, tsg
from testbed.analysis.metrics import METRICS, UNIT_LABEL, RunView
from testbed.analysis.runs import Run, RunSet
from testbed.analysis.stats import CI_METHOD, TEST_METHOD
from testbed.analysis.summary import Summary, summarize
from testbed.analysis.tables import (cell, comparison_line, default_metrics, header, meaningful,
                                     visible_metrics)
from testbed.errors import ConfigError, ResultsError
from testbed.files import write_atomic
from testbed.version import __version__


def _template() -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    # our own template, but the values come from run directories that may be anyone's:
    # escaped, and rendered in the same sandbox as user files (testbed.model.document)
    env = ImmutableSandboxedEnvironment(loader=jinja2.PackageLoader("testbed", "templates"),
                                        autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2")


def _run_facts(run: Run, labels: str) -> dict[str, Any]:
    m = run.manifest
    tools = m.get("tools") or {}
    host = m.get("host") or {}
    return {
        "id": run.run_id, "path": str(run.path), "labels": labels,
        "status": run.result.get("status"), "suspect": run.suspect,
        "reasons": "; ".join(run.result.get("suspect_reasons") or []),
        "error": run.result.get("error"),
        "kernel": (m.get("kernel") or {}).get("release", "?"),
        "backend": run.link_backend or "?",
        "variables": ", ".join(f"{k}={v}" for k, v in run.variables.items()),
        "cc": ", ".join(f"{k}: {v}" for k, v in (m.get("cc_in_use") or {}).items()) or "-",
        "tools": ", ".join(f"{k} {v}" for k, v in tools.items() if v) or "-",
        "host": ", ".join(f"{k} {v}" for k, v in host.items()) or "-",
        "command": " ".join(map(str, m.get("command") or [])) or "-",
        "manifest": json.dumps(m, indent=1, default=str),
    }


def _series_figures(summary: Summary, since: float | None, until: float | None,
                    every_run: bool = False) -> list[tuple[str, str, bytes]]:
    """The time series of the first run of each group (of each run: ``every_run``), and the
    time-sequence graph of each of its tcp flows when the run has a capture."""
    figures: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()
    for row in summary.rows:
        group = ", ".join(f"{k}={v}" for k, v in row.labels.items() if k in summary.dims) or "all runs"
        for view in row.views if every_run else row.views[:1]:
            if view.run.run_id not in seen:   # a run split by --by appears once
                seen.add(view.run.run_id)
                figures += _run_figures(view, group, f"{summary.runset.workload}: {group}",
                                        since, until)
    return figures


def _run_figures(view: RunView, group: str, title: str, since: float | None,
                 until: float | None) -> list[tuple[str, str, bytes]]:
    figures = [("series", f"{group} (run {view.run.run_id})",
                plots.timeseries(view, title, since=since, until=until))]
    if any((view.run.path / "raw").glob("*.pcap")):
        for flow in view.flows:
            if flow.get("protocol", "tcp") != "tcp":
                continue
            try:
                ts = tsg.run_time_sequence(view.run, flow["name"])
            except ResultsError:
                continue      # captured where this flow does not pass
            figures.append(("series", f"{group}: time-sequence graph of flow {flow['name']} "
                            f"(run {view.run.run_id})",
                            plots.time_sequence(ts, f"{title}, flow {flow['name']}", since, until)))
    return figures


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def render_report(summary: Summary, *, test_metric: str = "goodput",
                  png_dir: Path | None = None, since: float | None = None,
                  until: float | None = None, every_run: bool = False) -> str:
    """The report's HTML text; with ``png_dir``, each plot also as a PNG file there. The time
    series show [since, until] (seconds on each run's clock)."""
    metrics = visible_metrics(summary, default_metrics(summary))
    keys = summary.dims + summary.flow_by
    figures: list[tuple[str, str, bytes]] = []          # (section, title, png)
    for dim in summary.dims:
        sweep = plots.metric_sweep(summary, dim)
        if sweep is not None:
            figures.append(("overview", f"Metrics against {dim}", sweep))
    figures.append(("overview", "Throughput vs queueing delay (Pantheon-style)",
                    plots.throughput_delay(summary.rows)))
    figures.append(("overview", "RTT CDF", plots.rtt_cdf(summary.rows)))
    figures += _series_figures(summary, since, until, every_run)
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
        for i, (_, title, png) in enumerate(figures):
            slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")[:60]
            (png_dir / f"{i:02d}-{slug}.png").write_bytes(png)
    rs = summary.runset
    shown, rest = meaningful(summary.comparisons(test_metric))
    labels_of: dict[str, str] = {}
    for row in summary.rows:
        for v in row.views:
            labels_of.setdefault(v.run.run_id, ", ".join(f"{k}={x}" for k, x in row.labels.items()
                                                        if k in summary.dims))
    excluded = ([{"id": r.run_id, "why": "suspect: " + "; ".join(r.result.get("suspect_reasons") or [])}
                 for r in rs.excluded_suspect] +
                [{"id": r.run_id, "why": f"status {r.result.get('status')}"} for r in rs.excluded_partial])
    return _template().render(
        workload=rs.workload, header=header(summary), ci_method=CI_METHOD, test_method=TEST_METHOD,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__, excluded=excluded, keys=keys,
        metrics=[{"heading": f"{m} ({UNIT_LABEL[METRICS[m].unit]})" if UNIT_LABEL[METRICS[m].unit] else m,
                  "help": METRICS[m].help} for m in metrics],
        rows=[{"labels": [r.labels.get(k, "") for k in keys], "n": len(r.views),
               "cells": [cell(r.estimate(m), METRICS[m].unit) for m in metrics]} for r in summary.rows],
        test_metric=test_metric,
        comparisons=[comparison_line(c) for c in shown], comparisons_note=rest,
        overview=[{"title": t, "data": _b64(p)} for s, t, p in figures if s == "overview"],
        series=[{"title": t, "data": _b64(p)} for s, t, p in figures if s == "series"],
        runs=[_run_facts(r, labels_of.get(r.run_id, "")) for r in rs.runs],
    )


def write_report(runset: RunSet, output: Path, *, by: Sequence[str] = (),
                 png_dir: Path | None = None, since: float | None = None,
                 until: float | None = None, every_run: bool = False) -> Path:
    """Write the report of ``runset`` to ``output`` (HTML); returns the path."""
    output = Path(output)
    if output.is_dir():
        raise ConfigError(f"{output} is a directory: give the report's file name",
                          file="--output")
    html = render_report(summarize(runset, by), png_dir=png_dir, since=since, until=until,
                         every_run=every_run)
    output.parent.mkdir(parents=True, exist_ok=True)
    # a fresh temporary name: a fixed one (OUTPUT.tmp) is a symlink another user can plant
    write_atomic(output, html)
    return output
