"""``--assert`` expressions: a small, safe grammar over the summary. No eval.

    assertion := sum (CMP sum)+                 CMP: < <= > >= == !=
    sum       := product (("+" | "-") product)*
    product   := unary (("*" | "/") unary)*
    unary     := "-" unary | primary
    primary   := NUMBER [UNIT] | metric | "(" sum ")"
    metric    := NAME ["[" selector ("," selector)* "]"]
    selector  := NAME "=" VALUE                  VALUE: bbr, 1%, 100mbit, cubic-alone, "a b"

NAME must be a known metric (``testbed.analysis.metrics.METRICS``; a suffix
``_lo``/``_hi`` gives the 95 % CI bounds, ``_n`` the number of runs).
Numbers take units and are read in base units: ``50mbit`` = 50e6 bit/s,
``100ms`` = 0.1 s, ``1%`` = 0.01, ``64KB`` = 64000 bytes. A metric's value
is the mean over the repetitions of the group its selector picks.
Nothing else parses: no attribute access, calls, subscripts of expressions,
strings outside selectors or names starting with an underscore.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Union

from testbed.errors import ConfigError

# unit -> (kind, factor to base units)
UNITS: dict[str, tuple[str, float]] = {
    "%": ("fraction", 0.01),
    # rates as tc reads them (testbed.units): ...bit bits, ...bps bytes per second
    "bit": ("rate", 1.0), "bps": ("rate", 8.0), "kbit": ("rate", 1e3), "kbps": ("rate", 8e3),
    "mbit": ("rate", 1e6), "mbps": ("rate", 8e6), "gbit": ("rate", 1e9), "gbps": ("rate", 8e9),
    "ns": ("time", 1e-9), "us": ("time", 1e-6), "ms": ("time", 1e-3), "s": ("time", 1.0),
    "b": ("size", 1.0), "kb": ("size", 1e3), "mb": ("size", 1e6), "gb": ("size", 1e9),
    "kib": ("size", 1024.0), "mib": ("size", 1024.0 ** 2),
}
SUFFIXES = ("_lo", "_hi", "_n")
# the parser, checker and evaluator recurse over the tree: bounds that keep far from
# Python's recursion limit and far above any assertion a person writes
MAX_NESTING = 50      # parentheses and unary minus signs, one inside the other
MAX_OPERATORS = 100   # + - * / in one assertion
COMPARATORS = ("<=", ">=", "==", "!=", "<", ">")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:%|[A-Za-z]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|\[|\]|,|=)
""", re.VERBOSE)
_VALUE = re.compile(r"""\s*(?:"(?P<dq>[^"\\]*)"|'(?P<sq>[^'\\]*)'|(?P<bare>[^\s,\]\[()"'=]+))""")


class ExpressionError(ConfigError):
    """A malformed or unsafe assertion expression."""


@dataclass(frozen=True)
class Token:
    kind: str   # number, name, op, value, end, error
    text: str
    pos: int


def _error(text: str, pos: int, message: str) -> ExpressionError:
    pointer = f"\n  {text}\n  {' ' * pos}^"
    return ExpressionError(f"bad assertion at column {pos + 1}: {message}{pointer}")


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``; raises at the first character that is not one."""
    tokens = scan(text)
    if tokens[-1].kind == "error":
        raise _error(text, tokens[-1].pos, tokens[-1].text)
    return tokens


def scan(text: str) -> list[Token]:
    """Tokens up to the end, or up to an ``error`` token (message in ``text``),
    so that the parser reports problems in the order a reader meets them."""
    tokens: list[Token] = []
    pos, depth = 0, 0
    expect_value = False
    while pos < len(text):
        if expect_value:
            m = _VALUE.match(text, pos)
            if not m:
                tokens.append(Token("error", "expected a selector value after '=', "
                                    "e.g. cc=bbr or loss=1%", pos))
                return tokens
            value = next(g for g in (m.group("dq"), m.group("sq"), m.group("bare")) if g is not None)
            tokens.append(Token("value", value, pos))
            pos, expect_value = m.end(), False
            continue
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            hint = {".": "attribute access is not allowed", '"': "strings are only allowed as "
                    "selector values", "'": "strings are only allowed as selector values",
                    ";": "one assertion per --assert", "!": "use != for 'not equal'",
                    "&": "use one --assert per condition", "|": "use one --assert per condition",
                    "%": "'%' must follow a number", "*": "", "@": "", "{": "", "}": ""}.get(ch, "")
            tokens.append(Token("error", f"unexpected character {ch!r}" + (f" ({hint})" if hint else ""),
                                pos))
            return tokens
        kind = m.lastgroup or ""
        if kind != "space":
            tok = Token(kind, m.group(), pos)
            if kind == "op" and tok.text == "[":
                depth += 1
            elif kind == "op" and tok.text == "]":
                depth -= 1
            elif kind == "op" and tok.text == "=" and depth > 0:
                expect_value = True
            tokens.append(tok)
        pos = m.end()
    if expect_value:
        tokens.append(Token("error", "expected a selector value after '='", len(text)))
        return tokens
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---- the tree ----------------------------------------------------------------

@dataclass(frozen=True)
class Number:
    value: float
    text: str


@dataclass(frozen=True)
class MetricRef:
    metric: str         # base metric name
    stat: str           # "mean", "lo", "hi", "n"
    selectors: tuple[tuple[str, str], ...]
    text: str


@dataclass(frozen=True)
class Neg:
    operand: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Compare:
    operands: tuple["Node", ...]
    ops: tuple[str, ...]


Node = Union[Number, MetricRef, Neg, BinOp, Compare]


def parse_number(text: str) -> float:
    m = re.fullmatch(r"((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)(%|[A-Za-z]*)", text)
    if not m:
        raise ValueError(text)
    unit = m.group(2).lower()
    if unit and unit not in UNITS:
        raise KeyError(unit)
    value = float(m.group(1)) * (UNITS[unit][1] if unit else 1.0)
    if not math.isfinite(value):
        raise OverflowError(text)
    return value


class Parser:
    """Recursive descent over the tokens; ``metrics`` are the names allowed."""

    def __init__(self, text: str, metrics: set[str]) -> None:
        self.text = text
        self.metrics = metrics
        self.tokens = scan(text)
        self.i = 0
        self.nesting = 0
        self.operators = 0

    @property
    def tok(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind == "error":
            raise _error(self.text, tok.pos, tok.text)
        return tok

    def take(self) -> Token:
        tok = self.tok
        self.i += 1
        return tok

    def expect(self, text: str, what: str) -> Token:
        if self.tok.kind == "op" and self.tok.text == text:
            return self.take()
        raise _error(self.text, self.tok.pos, f"expected {what}, found {self._desc(self.tok)}")

    @staticmethod
    def _desc(tok: Token) -> str:
        return "the end" if tok.kind == "end" else repr(tok.text)

    def parse(self) -> Compare:
        if self.tok.kind == "end":
            raise _error(self.text, 0, "empty assertion")
        first = self.sum()
        operands, ops = [first], []
        while self.tok.kind == "op" and self.tok.text in COMPARATORS:
            ops.append(self.take().text)
            operands.append(self.sum())
        if self.tok.kind != "end":
            extra = self.tok
            if extra.kind == "op" and extra.text == "(":
                raise _error(self.text, extra.pos, "calls are not allowed")
            if extra.kind == "op" and extra.text == "=":
                raise _error(self.text, extra.pos, "use == to compare")
            raise _error(self.text, extra.pos, f"unexpected {self._desc(extra)}")
        if not ops:
            raise _error(self.text, len(self.text), "an assertion must compare two values, "
                         "e.g. goodput[cc=bbr] > 2 * goodput[cc=cubic]")
        return Compare(tuple(operands), tuple(ops))

    def operator(self) -> str:
        """Take a binary operator, refusing more than MAX_OPERATORS."""
        tok = self.take()
        self.operators += 1
        if self.operators > MAX_OPERATORS:
            raise _error(self.text, tok.pos, f"more than {MAX_OPERATORS} operators; split it "
                         "into several --assert")
        return tok.text

    @contextmanager
    def nested(self, tok: Token) -> Iterator[None]:
        """One level deeper (a '(' or a sign), refusing more than MAX_NESTING."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise _error(self.text, tok.pos, f"nested more than {MAX_NESTING} levels deep "
                         "(parentheses and signs)")
        try:
            yield
        finally:
            self.nesting -= 1

    def sum(self) -> Node:
        node = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            op = self.operator()
            node = BinOp(op, node, self.product())
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            op = self.operator()
            node = BinOp(op, node, self.unary())
        return node

    def unary(self) -> Node:
        if self.tok.kind == "op" and self.tok.text == "-":
            with self.nested(self.take()):
                return Neg(self.unary())
        return self.primary()

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "number":
            self.take()
            try:
                return Number(parse_number(tok.text), tok.text)
            except KeyError as exc:
                raise _error(self.text, tok.pos, f"unknown unit {exc.args[0]!r} (use %, bit/kbit/mbit/"
                             "gbit, ns/us/ms/s, B/KB/MB)") from None
            except OverflowError:
                raise _error(self.text, tok.pos, f"{tok.text} is too large a number") from None
        if tok.kind == "op" and tok.text == "(":
            with self.nested(self.take()):
                node = self.sum()
            self.expect(")", "')'")
            return node
        if tok.kind == "name":
            return self.metric()
        raise _error(self.text, tok.pos, f"expected a number, a metric or '(', found {self._desc(tok)}")

    def _metric_name(self, tok: Token) -> tuple[str, str]:
        name = tok.text
        if name.startswith("_"):
            raise _error(self.text, tok.pos, f"names starting with '_' are not allowed ({name!r})")
        if name in self.metrics:
            return name, "mean"
        for suffix in SUFFIXES:
            if name.endswith(suffix) and name[:-len(suffix)] in self.metrics:
                return name[:-len(suffix)], suffix[1:]
        raise _error(self.text, tok.pos, f"unknown metric {name!r} (known: "
                     f"{', '.join(sorted(self.metrics))}; suffix _lo/_hi for the CI, _n for run count)")

    def metric(self) -> MetricRef:
        tok = self.take()
        metric, stat = self._metric_name(tok)
        selectors: list[tuple[str, str]] = []
        if self.tok.kind == "op" and self.tok.text == "[":
            self.take()
            while True:
                key = self.tok
                if key.kind != "name":
                    raise _error(self.text, key.pos, f"expected a selector name, found {self._desc(key)}")
                if key.text.startswith("_"):
                    raise _error(self.text, key.pos, f"names starting with '_' are not allowed ({key.text!r})")
                self.take()
                self.expect("=", "'=' after the selector name")
                value = self.take()
                if value.kind != "value":
                    raise _error(self.text, value.pos, "expected a selector value")
                if any(k == key.text for k, _ in selectors):
                    raise _error(self.text, key.pos, f"selector {key.text!r} given twice")
                selectors.append((key.text, value.text))
                if self.tok.kind == "op" and self.tok.text == ",":
                    self.take()
                    continue
                self.expect("]", "',' or ']'")
                break
        end = self.tokens[self.i - 1]
        text = self.text[tok.pos:end.pos + len(end.text)]
        if self.tok.kind == "op" and self.tok.text == "(":
            raise _error(self.text, self.tok.pos, "calls are not allowed")
        if self.tok.kind == "op" and self.tok.text == "[":
            raise _error(self.text, self.tok.pos, "only one selector list per metric")
        return MetricRef(metric, stat, tuple(selectors), text)


def parse(text: str, metrics: set[str] | Mapping[str, str | None]) -> Compare:
    """Parse one assertion; ``ExpressionError`` (a ConfigError) when it is not one.

    With ``metrics`` a mapping of metric name to kind (rate, time, fraction, size or None
    for a plain number), values of different kinds may not be compared, added or
    subtracted: ``goodput > 1ms`` is an error, not a verdict.
    """
    if len(text) > 2000:
        raise ExpressionError("assertion too long (over 2000 characters)")
    tree = Parser(text, set(metrics)).parse()
    if isinstance(metrics, Mapping):
        kinds = [kind_of(n, metrics) for n in tree.operands]
        for (a, ka), (b, kb) in zip(zip(tree.operands, kinds), zip(tree.operands[1:], kinds[1:])):
            _same_kind(text, a, ka, b, kb, "compares")
    return tree


MIXED = "mixed"   # a product or quotient of two kinds: not checked further


def kind_of(node: Node, metrics: Mapping[str, str | None]) -> str | None:
    """What ``node`` measures: rate, time, fraction, size, None (a plain number) or MIXED."""
    if isinstance(node, Number):
        m = re.fullmatch(r"[0-9.eE+-]+(%|[A-Za-z]*)", node.text)
        unit = m.group(1).lower() if m else ""
        return UNITS[unit][0] if unit in UNITS else None
    if isinstance(node, MetricRef):
        return None if node.stat == "n" else metrics.get(node.metric)
    if isinstance(node, Neg):
        return kind_of(node.operand, metrics)
    if isinstance(node, BinOp):
        a, b = kind_of(node.left, metrics), kind_of(node.right, metrics)
        if node.op in ("+", "-"):
            _same_kind("", node.left, a, node.right, b, "adds" if node.op == "+" else "subtracts")
            return a or b
        if node.op == "*":
            return a if b is None else b if a is None else MIXED
        return a if b is None else None if a == b else MIXED
    return None


def _describe(node: Node) -> str:
    return node.text if isinstance(node, (Number, MetricRef)) else "an expression"


def _same_kind(text: str, a: Node, ka: str | None, b: Node, kb: str | None, verb: str) -> None:
    if ka and kb and MIXED not in (ka, kb) and ka != kb:
        raise ExpressionError(f"bad assertion{f' {text!r}' if text else ''}: {verb} "
                              f"{_describe(a)} (a {ka}) with {_describe(b)} (a {kb}); "
                              "give numbers the unit of the metric (e.g. 50mbit, 20ms, 1%)")


def show_value(value: float, kind: str | None) -> str:
    """A value of ``kind`` for people: 80.9 Mbit/s, 12.5 ms, 1.2 %, 64 KB."""
    if kind == "rate":
        for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {unit}"
        return f"{value:.4g} bit/s"
    if kind == "time":
        return f"{value * 1e3:.4g} ms" if abs(value) < 10 else f"{value:.4g} s"
    if kind == "fraction":
        return f"{value * 100:.4g} %"
    if kind == "size":
        return f"{value / 1e3:.4g} KB" if abs(value) >= 1e3 else f"{value:.4g} B"
    return f"{value:.6g}"


# ---- evaluation ----------------------------------------------------------------

class Missing(Exception):
    """A metric has no value for the selected runs."""


Resolver = Callable[[MetricRef], float | None]


def evaluate(node: Node, resolve: Resolver) -> float:
    if isinstance(node, Number):
        return node.value
    if isinstance(node, MetricRef):
        value = resolve(node)
        if value is None:
            raise Missing(f"{node.text} has no value (no matching run or flow measured it)")
        return value
    if isinstance(node, Neg):
        return -evaluate(node.operand, resolve)
    if isinstance(node, BinOp):
        a, b = evaluate(node.left, resolve), evaluate(node.right, resolve)
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        if b == 0:
            raise Missing("division by zero")
        return a / b
    raise TypeError(f"not an arithmetic node: {node!r}")


_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}


@dataclass
class Verdict:
    text: str
    passed: bool
    values: list[float]
    message: str


def check(tree: Compare, text: str, resolve: Resolver,
          metrics: Mapping[str, str | None] | None = None) -> Verdict:
    """Evaluate a parsed assertion; a missing value fails it (with the reason).
    With ``metrics`` (name -> kind, as for ``parse``) values are shown in their units."""
    try:
        values = [evaluate(n, resolve) for n in tree.operands]
    except Missing as exc:
        return Verdict(text, False, [], str(exc))
    ok = all(_CMP[op](a, b) for op, a, b in zip(tree.ops, values, values[1:]))
    kinds = [kind_of(n, metrics) if metrics is not None else None for n in tree.operands]
    known = {k for k in kinds if k and k != MIXED}
    kinds = [k if k and k != MIXED else (next(iter(known)) if len(known) == 1 else None)
             for k in kinds]
    shown = " ".join(show_value(v, k) if i == 0 else f"{tree.ops[i - 1]} {show_value(v, k)}"
                     for i, (v, k) in enumerate(zip(values, kinds)))
    return Verdict(text, ok, values, f"{'holds' if ok else 'fails'}: {shown}")
