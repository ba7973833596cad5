"""The --assert grammar: what parses, what it means, and everything it refuses."""

from __future__ import annotations

import pytest

from testbed.analysis import expr
from testbed.analysis.metrics import METRICS
from testbed.errors import ConfigError

NAMES = set(METRICS)


def value(text: str, metrics: dict[tuple[str, tuple], float | None] | None = None) -> list[float]:
    tree = expr.parse(text, NAMES)
    table = metrics or {}
    v = expr.check(tree, text, lambda ref: table.get((ref.metric, ref.stat, ref.selectors)))
    return v.values


@pytest.mark.parametrize("text, expected", [
    ("1 < 2", [1, 2]),
    ("2 * 3 + 4 == 10", [10, 10]),
    ("2 * (3 + 4) == 14", [14, 14]),
    ("-3 - -2 < 0", [-1, 0]),
    ("10 / 4 >= 2.5", [2.5, 2.5]),
    ("50mbit == 50e6", [50e6, 50e6]),
    ("100ms < 1s", [0.1, 1.0]),
    ("1% == 0.01", [0.01, 0.01]),
    ("64KB == 64000", [64000, 64000]),
    ("1 < 2 <= 2", [1, 2, 2]),
])
def test_arithmetic_and_units(text, expected):
    assert value(text) == pytest.approx(expected)


def test_metric_references_and_selectors():
    tree = expr.parse('goodput[cc=bbr, loss=1%] > 2 * goodput[cc=cubic,loss=1%]', NAMES)
    refs = [tree.operands[0], tree.operands[1].right]
    assert refs[0] == expr.MetricRef("goodput", "mean", (("cc", "bbr"), ("loss", "1%")),
                                     "goodput[cc=bbr, loss=1%]")
    assert refs[1].selectors == (("cc", "cubic"), ("loss", "1%"))
    table = {("goodput", "mean", (("cc", "bbr"), ("loss", "1%"))): 90e6,
             ("goodput", "mean", (("cc", "cubic"), ("loss", "1%"))): 5e6}
    v = expr.check(tree, "t", lambda r: table[(r.metric, r.stat, r.selectors)])
    assert v.passed and v.values == [90e6, 10e6]


def test_selector_values_may_have_dashes_dots_and_quotes():
    tree = expr.parse("""jain[mix=cubic-alone, rate="100 mbit", x='a.b'] > 0.5""", NAMES)
    assert tree.operands[0].selectors == (("mix", "cubic-alone"), ("rate", "100 mbit"), ("x", "a.b"))


def test_ci_suffixes():
    tree = expr.parse("goodput_lo[cc=bbr] > goodput_hi[cc=cubic] + goodput_n", NAMES)
    assert tree.operands[0].stat == "lo"
    assert tree.operands[1].left.stat == "hi"
    assert tree.operands[1].right.stat == "n"


def test_failing_and_missing():
    tree = expr.parse("rtt_p99 < 50ms", NAMES)
    assert not expr.check(tree, "x", lambda r: 0.06).passed
    missing = expr.check(tree, "x", lambda r: None)
    assert not missing.passed and "no value" in missing.message
    zero = expr.check(expr.parse("1 / (goodput - goodput) > 0", NAMES), "x", lambda r: 1.0)
    assert not zero.passed and "division by zero" in zero.message


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("goodput", "must compare"),
    ("goodput + 1", "must compare"),
    ("__import__('os').system('true') > 0", "'_'"),
    ("goodput.__class__ > 1", "attribute access"),
    ("goodput[cc=bbr].mean > 1", "attribute access"),
    ("goodput() > 1", "calls"),
    ("open > 1", "unknown metric"),
    ("exec(1) > 1", "unknown metric"),
    ("goodput[__class__=x] > 1", "'_'"),
    ("goodput[cc=bbr][loss=1%] > 1", "one selector list"),
    ("goodput[cc=bbr, cc=cubic] > 1", "twice"),
    ("goodput[cc=] > 1", "selector value"),
    ("goodput[cc bbr] > 1", "'='"),
    ("goodput[1=2] > 1", "selector name"),
    ("'abc' > 1", "strings"),
    ("goodput = 1", "use =="),
    ("goodput > 1; goodput < 2", "one assertion"),
    ("goodput > 1 and goodput < 2", "unexpected"),
    ("(goodput > 1", "')'"),
    ("goodput > 10furlongs", "unknown unit"),
    ("goodput > 1e400mbit", "1e400mbit is too large a number"),
    ("goodput > 1e100000000", "too large a number"),
    ("goodput > 1 % 2", "must follow a number"),
    ("goodput ** 2 > 1", "expected a number"),
    ("[goodput] > 1", "expected a number"),
    ("lambda: 1 > 0", "unknown metric"),
    ("goodput > {1}", "unexpected character"),
    ("x" * 2001 + " > 1", "too long"),
])
def test_rejects(text, why):
    with pytest.raises(ConfigError) as info:
        expr.parse(text, NAMES)
    assert why in str(info.value)
    assert isinstance(info.value, expr.ExpressionError)


def test_error_points_at_the_column():
    with pytest.raises(ConfigError) as info:
        expr.parse("goodput[cc=bbr] > 2 * rttp99", NAMES)
    msg = str(info.value)
    assert "column 23" in msg and "unknown metric 'rttp99'" in msg
    assert msg.splitlines()[-1].index("^") == 2 + 22


KINDS = {"goodput": "rate", "rtt_p99": "time", "retrans": "fraction", "jain": None}


@pytest.mark.parametrize("text", [
    "goodput > 50mbit", "goodput[cc=bbr] > 2 * goodput[cc=cubic]", "goodput / goodput > 0.5",
    "rtt_p99 < 50ms", "retrans < 1%", "goodput > 1000", "goodput_n >= 3", "jain > 0.9",
    "goodput * rtt_p99 > 64KB", "goodput - 10mbit > 0",
])
def test_units_that_agree(text):
    expr.parse(text, KINDS)


@pytest.mark.parametrize("text, why", [
    ("goodput > 1ms", "compares goodput (a rate) with 1ms (a time)"),
    ("rtt_p99 < 1%", "compares rtt_p99 (a time) with 1% (a fraction)"),
    ("rtt_p99 + 1mbit < 1s", "adds rtt_p99 (a time) with 1mbit (a rate)"),
    ("goodput > 50mbit > 1s", "compares 50mbit (a rate) with 1s (a time)"),
])
def test_units_that_disagree(text, why):
    with pytest.raises(expr.ExpressionError) as info:
        expr.parse(text, KINDS)
    assert why in str(info.value)
    expr.parse(text, set(KINDS))  # without kinds (a bare set of names): not checked


def test_verdicts_show_values_in_their_units():
    tree = expr.parse("goodput > 2 * goodput", KINDS)
    v = expr.check(tree, "t", lambda r: 80.9e6, KINDS)
    assert v.message == "fails: 80.9 Mbit/s > 161.8 Mbit/s"
    v = expr.check(expr.parse("rtt_p99 < 50ms", KINDS), "t", lambda r: 0.0123, KINDS)
    assert v.message == "holds: 12.3 ms < 50 ms"


@pytest.mark.parametrize("text, why", [
    ("(" * 600 + "1" + ")" * 600 + " < 2", "nested more than 50 levels deep"),
    ("-" * 1990 + "1 < 2", "nested more than 50 levels deep"),
    ("- (" * 60 + "1" + ")" * 60 + " < 2", "nested more than 50 levels deep"),
    ("+".join(["goodput"] * 240) + " > 1", "more than 100 operators"),
    ("1" + "*1" * 150 + " < 2", "more than 100 operators"),
])
def test_deep_or_long_expressions_are_refused_not_a_crash(tmp_path, capsys, text, why):
    """Depth that would exhaust Python's recursion (parser, unit check, evaluation) is an
    ExpressionError, exit 2 from compare (1 is reserved for an assertion that fails)."""
    from testbed.cli import main as cli
    from testbed.analysis.synthetic import FakeFlow, write_run
    with pytest.raises(expr.ExpressionError, match=why):
        expr.parse(text, KINDS)
    run = write_run(tmp_path, "r", variables={}, flows=[FakeFlow("f", "bbr", 1e6)])
    assert cli.main(["compare", str(run), "--assert", text]) == 2
    assert why in capsys.readouterr().err


def test_nesting_and_operators_up_to_the_limits_still_work():
    text = "(" * expr.MAX_NESTING + "1" + ")" * expr.MAX_NESTING + " < " + \
        "+".join(["1"] * (expr.MAX_OPERATORS + 1))
    assert value(text) == [1, expr.MAX_OPERATORS + 1]


@pytest.mark.parametrize("text, value", [("1tbit", 1e12), ("2gib", 2 * 1024 ** 3),
                                         ("1min", 60.0), ("3sec", 3.0)])
def test_assertions_take_every_unit_a_topology_takes(text, value):
    """One unit table (testbed.units): --assert lacked tbit, gib, min and sec."""
    assert expr.parse_number(text) == pytest.approx(value)
