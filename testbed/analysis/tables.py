"""A Summary as text: a rich table for the terminal, CSV, JSON or Markdown.

Terminal and Markdown show people's units (Mbit/s, ms, %) and ``mean ± half
width of the 95 % CI``; CSV and JSON keep base units (bit/s, s, fractions)
with the CI bounds in their own columns, for scripts.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Any, Sequence

from testbed.analysis.metrics import DEFAULT_COLUMNS, METRICS, UNIT_LABEL, fmt_value
from testbed.analysis.stats import CI_METHOD, TEST_METHOD, Estimate
from testbed.analysis.summary import Comparison, Summary

FORMATS = ("table", "csv", "json", "markdown")


def cell(est: Estimate, unit: str) -> str:
    if est.mean is None:
        return "-"
    text = fmt_value(est.mean, unit)
    if est.half_width is not None:
        text += f" ± {fmt_value(est.half_width, unit)}"
    return text


def visible_metrics(summary: Summary, metrics: Sequence[str]) -> list[str]:
    """The metrics some row has a value for."""
    return [m for m in metrics if any(r.estimate(m).mean is not None for r in summary.rows)]


def header(summary: Summary) -> str:
    rs = summary.runset
    text = (f"{rs.workload}: {len(rs.runs)} of {rs.total} runs compared in {len(summary.rows)} "
            f"group(s); {rs.exclusion_note()}")
    return f"{text}; {summary.note}" if summary.note else text


def meaningful(comparisons: Sequence[Comparison]) -> tuple[list[Comparison], str]:
    """The comparisons worth a line (those that can be significant), and one line for the rest:
    with n=2 vs 2 no difference, however large, reaches p < 0.05 in an exact test."""
    shown = [c for c in comparisons if c.test is not None and c.test.min_p < 0.05]
    hidden = [c for c in comparisons if c not in shown]
    if not hidden:
        return shown, ""
    sizes = sorted({f"n={c.test.n_a} vs {c.test.n_b}" for c in hidden if c.test is not None})
    why = (f"cannot be significant with {', '.join(sizes)} (the exact test needs 4 runs a group "
           f"for p < 0.05: --repeat 4)" if sizes else "have no data")
    return shown, f"{len(hidden)} of {len(comparisons)} pairs not shown: they {why}"


def _heading(metric: str, sep: str = " ") -> str:
    unit = UNIT_LABEL[METRICS[metric].unit]
    return f"{metric}{sep}({unit})" if unit else metric


def to_json(summary: Summary, metrics: Sequence[str], comparisons: list[Comparison]) -> str:
    rs = summary.runset
    data: dict[str, Any] = {
        "workload": rs.workload, "ci_method": CI_METHOD, "test_method": TEST_METHOD,
        "runs": [str(r.path) for r in rs.runs],
        "excluded": {"suspect": [str(r.path) for r in rs.excluded_suspect],
                     "partial": [str(r.path) for r in rs.excluded_partial]},
        "dimensions": summary.dims + summary.flow_by,
        "units": {m: METRICS[m].unit for m in metrics},
        "groups": [{"labels": r.labels, "n": len(r.views), "runs": [v.run.run_id for v in r.views],
                    "metrics": {m: r.estimate(m).as_dict() for m in metrics}} for r in summary.rows],
        "comparisons": [_comparison_dict(c) for c in comparisons],
    }
    return json.dumps(data, indent=1)


def _comparison_dict(c: Comparison) -> dict[str, Any]:
    return {"metric": c.metric, "differs_in": c.key, "a": c.a.labels, "b": c.b.labels,
            "a_mean": c.a.estimate(c.metric).mean, "b_mean": c.b.estimate(c.metric).mean,
            "ratio": c.ratio, "u": c.test.u if c.test else None,
            "p_value": c.test.p_value if c.test else None,
            "method": c.test.method if c.test else None,
            "significant_at_0.05": c.test.significant() if c.test else None}


def to_csv(summary: Summary, metrics: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    keys = summary.dims + summary.flow_by
    w.writerow([*keys, "n", *[f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high")]])
    for r in summary.rows:
        cells: list[Any] = [r.labels.get(k, "") for k in keys] + [len(r.views)]
        for m in metrics:
            e = r.estimate(m)
            cells += ["" if x is None else x for x in (e.mean, e.ci_low, e.ci_high)]
        w.writerow(cells)
    return buf.getvalue()


def comparison_line(c: Comparison) -> list[str]:
    unit = METRICS[c.metric].unit
    ea, eb = c.a.estimate(c.metric), c.b.estimate(c.metric)
    if c.test is None:
        verdict = "no data"
    elif c.test.significant():
        verdict = "significant (p < 0.05)"
    elif c.test.min_p >= 0.05:
        verdict = f"cannot be significant with n={c.test.n_a} vs {c.test.n_b} (min p {c.test.min_p:.2g})"
    else:
        verdict = "not significant"
    return [c.a.label(), c.b.label(), fmt_value(ea.mean, unit), fmt_value(eb.mean, unit),
            "-" if c.ratio is None else f"{c.ratio:.2f}x",
            "-" if c.test is None else f"{c.test.p_value:.3g}", verdict]


def to_markdown(summary: Summary, metrics: Sequence[str], comparisons: list[Comparison]) -> str:
    keys = summary.dims + summary.flow_by
    heads = [*keys, "n", *[_heading(m) for m in metrics]]
    lines = [header(summary), "", f"Values: mean ± 95 % CI half-width ({CI_METHOD}).", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in summary.rows:
        cells = [r.labels.get(k, "") for k in keys] + [str(len(r.views))]
        cells += [cell(r.estimate(m), METRICS[m].unit) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    shown, rest = meaningful(comparisons)
    if shown:
        metric = comparisons[0].metric
        lines += ["", f"Differences in {metric} ({TEST_METHOD}):", "",
                  "| A | B | mean A | mean B | A/B | p | verdict |", "|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(comparison_line(c)) + " |" for c in shown]
    if rest:
        lines += ["", f"Differences in {comparisons[0].metric} ({TEST_METHOD}): {rest}."]
    return "\n".join(lines) + "\n"


def print_table(summary: Summary, metrics: Sequence[str], comparisons: list[Comparison],
                file: Any = None) -> None:
    """The terminal table (rich); plain text when output is not a terminal."""
    from rich.console import Console
    from rich.table import Table
    out = file if file is not None else sys.stdout
    console = Console(file=file, width=None if out.isatty() else 200)
    keys = summary.dims + summary.flow_by
    table = Table(title=header(summary), caption=f"mean ± 95 % CI half-width ({CI_METHOD})",
                  title_justify="left", caption_justify="left")
    for k in keys:
        table.add_column(k, style="bold")
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(_heading(m, "\n"), justify="right")
    for r in summary.rows:
        table.add_row(*[r.labels.get(k, "") for k in keys], str(len(r.views)),
                      *[cell(r.estimate(m), METRICS[m].unit) for m in metrics])
    console.print(table)
    shown, rest = meaningful(comparisons)
    if shown:
        ct = Table(title=f"Differences in {comparisons[0].metric} ({TEST_METHOD})", title_justify="left")
        for h in ("A", "B", "mean A", "mean B", "A/B", "p", "verdict"):
            ct.add_column(h)
        for c in shown:
            ct.add_row(*comparison_line(c))
        console.print(ct)
    if rest:
        console.print(f"Differences in {comparisons[0].metric} ({TEST_METHOD}): {rest}.")


def default_metrics(summary: Summary | None = None) -> list[str]:
    """The default columns; with flows split (``--by cc``), each one's share of the goodput too."""
    columns = list(DEFAULT_COLUMNS)
    if summary is not None and summary.flow_by:
        columns.insert(columns.index("goodput") + 1, "share")
    return columns
