"""CI verdicts: ``--assert`` expressions checked against a Summary, and JUnit XML.

All expressions are parsed (and their selectors resolved) before any is
evaluated, so a typo is a ConfigError up front, not a failed test. A metric
without a value (no run matched, the flows did not measure it) fails its
assertion with the reason.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

from testbed.analysis import expr
from testbed.analysis.metrics import METRICS
from testbed.analysis.summary import Row, Summary


# what each metric measures, for --assert's unit checks
KINDS: dict[str, str | None] = {
    name: {"bps": "rate", "s": "time", "duration": "time", "fraction": "fraction",
           "bytes": "size"}.get(m.unit) for name, m in METRICS.items()}


def _walk(node: expr.Node) -> list[expr.MetricRef]:
    if isinstance(node, expr.MetricRef):
        return [node]
    if isinstance(node, expr.Neg):
        return _walk(node.operand)
    if isinstance(node, expr.BinOp):
        return _walk(node.left) + _walk(node.right)
    if isinstance(node, expr.Compare):
        return [r for n in node.operands for r in _walk(n)]
    return []


def check_assertions(summary: Summary, texts: Sequence[str]) -> list[expr.Verdict]:
    """Parse every assertion, resolve its selectors, then evaluate each."""
    parsed = []
    rows: dict[tuple[str, tuple[tuple[str, str], ...]], Row] = {}
    for text in texts:
        tree = expr.parse(text, KINDS)
        for ref in _walk(tree):
            key = (ref.metric, ref.selectors)
            if key not in rows:
                rows[key] = summary.select(dict(ref.selectors), where=f"--assert {text!r}: {ref.text}")
        parsed.append((text, tree))

    def resolve(ref: expr.MetricRef) -> float | None:
        row = rows[(ref.metric, ref.selectors)]
        if ref.stat == "n":
            return float(row.estimate(ref.metric).n)
        est = row.estimate(ref.metric)
        return {"mean": est.mean, "lo": est.ci_low, "hi": est.ci_high}[ref.stat]

    return [expr.check(tree, text, resolve, KINDS) for text, tree in parsed]


def write_junit(verdicts: Sequence[expr.Verdict], path: Path, *, suite: str = "testbed compare") -> None:
    """One testsuite, one testcase per assertion (failure element when it fails)."""
    failures = sum(not v.passed for v in verdicts)
    root = ET.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(verdicts)),
                       failures=str(failures), errors="0", skipped="0")
    for v in verdicts:
        tc = ET.SubElement(ts, "testcase", classname="testbed.assert", name=v.text)
        if v.passed:
            ET.SubElement(tc, "system-out").text = v.message
        else:
            f = ET.SubElement(tc, "failure", message=v.message, type="AssertionFailed")
            f.text = f"{v.text}\n{v.message}"
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
