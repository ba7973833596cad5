"""Analysis of run directories: comparison tables, statistics over
repetitions, CI verdicts (``--assert``), plots and the HTML report.

Reads only files written by ``testbed run`` (result.json, manifest.json, the
CSV time series); never needs root and never touches the kernel.

    from testbed.analysis import load_runs, summarize
    s = summarize(load_runs(["results/loss-sweep"]), by=["cc"])
    for row in s.rows:
        print(row.labels, row.estimate("goodput"))
"""

from __future__ import annotations

from testbed.analysis.runs import ResultsError, RunSet, load_runs
from testbed.analysis.summary import Summary, summarize

__all__ = ["ResultsError", "RunSet", "Summary", "load_runs", "summarize"]
