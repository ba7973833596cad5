"""The shape of JSON that testbed reads back and cannot trust: tool output
(iperf3, the built-in agent) and run directories (result.json, manifest.json).

A shape is declared, not coded: ``Obj`` (an object and the types of the keys
that are read), ``ListOf``, ``MapOf``, ``Opt`` (or null), ``OneOf``, and the
leaves ``str``, ``bool``, ``int`` (a whole number), ``float`` (any number;
numbers must be finite and below 2^63 in size, so that arithmetic on them cannot
overflow) and ``object`` (anything). ``problem`` names the first place where a
value differs, as a path (``flows[2].goodput_bps``), so that a reader checks
once and then reads with plain ``dict.get`` without meeting a wrong type.
Keys an ``Obj`` does not name are allowed and not looked at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Union


def parse_json(data: bytes) -> tuple[Any, str | None]:
    """The JSON document in ``data``, and None; or None and why there is none (not
    UTF-8, not JSON, nested too deeply for the parser)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
    except RecursionError:
        return None, "not readable JSON (nested too deeply)"
    except ValueError as exc:     # e.g. an integer of more digits than Python converts
        return None, f"not readable JSON ({exc})"


@dataclass(frozen=True)
class Obj:
    """An object; ``fields`` that are present have their shape, ``required`` ones must be."""

    fields: Mapping[str, "Shape"] = field(default_factory=dict)
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListOf:
    item: "Shape"


@dataclass(frozen=True)
class MapOf:
    """An object with any keys, every value of one shape."""

    value: "Shape"


@dataclass(frozen=True)
class Opt:
    """``shape`` or null."""

    shape: "Shape"


@dataclass(frozen=True)
class OneOf:
    shapes: tuple["Shape", ...]


Shape = Union[type, Obj, ListOf, MapOf, Opt, OneOf]

LARGEST = 2 ** 63   # numbers in what testbed reads are counts, bytes, times: 64-bit at most
_LEAF_NAMES = {str: "a string", bool: "true or false", int: "a whole number",
               float: "a number", object: "anything"}


def describe(value: Any) -> str:
    """What a JSON value is, for a message: 'a list', 'null', 'the string "x"'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        text = repr(value)
        return f"the number {text if len(text) <= 24 else text[:20] + '...'}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) \
        else type(value).__name__


def expected(shape: Shape) -> str:
    """What ``shape`` asks for, for a message."""
    if isinstance(shape, Obj):
        return "an object"
    if isinstance(shape, (ListOf,)):
        return "a list"
    if isinstance(shape, MapOf):
        return "an object"
    if isinstance(shape, Opt):
        return f"{expected(shape.shape)} or null"
    if isinstance(shape, OneOf):
        return " or ".join(expected(s) for s in shape.shapes)
    return _LEAF_NAMES.get(shape, shape.__name__)


def _leaf_ok(value: Any, leaf: type) -> bool:
    if leaf is object:
        return True
    if leaf in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        # NaN and infinities compare False, so this keeps them out too
        return (isinstance(value, int) or leaf is float) and abs(value) < LARGEST
    return isinstance(value, leaf)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def problem(value: Any, shape: Shape, path: str = "") -> tuple[str, str] | None:
    """``(path, what is wrong)`` at the first place ``value`` is not of ``shape``; None if
    it is. The path is empty for the value itself."""
    if isinstance(shape, Opt):
        found = None if value is None else problem(value, shape.shape, path)
        if found is not None and found[0] == path:   # the value itself: say null would do
            return path, f"expected {expected(shape)}, found {describe(value)}"
        return found
    if isinstance(shape, OneOf):
        found = [problem(value, s, path) for s in shape.shapes]
        if None in found:
            return None
        deeper = [f for f in found if f is not None and f[0] != path]
        if deeper:   # an alternative of the right kind, wrong inside: say where
            return deeper[0]
        return path, f"expected {expected(shape)}, found {describe(value)}"
    if isinstance(shape, type):
        return None if _leaf_ok(value, shape) else \
            (path, f"expected {expected(shape)}, found {describe(value)}")
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            return path, f"expected a list, found {describe(value)}"
        for i, item in enumerate(value):
            found = problem(item, shape.item, _join(path, i))
            if found:
                return found
        return None
    if not isinstance(value, dict):
        return path, f"expected an object, found {describe(value)}"
    if isinstance(shape, MapOf):
        for key, item in value.items():
            found = problem(item, shape.value, _join(path, key))
            if found:
                return found
        return None
    for key in shape.required:
        if key not in value:
            return _join(path, key), "missing"
    for key, sub in shape.fields.items():
        if key in value:
            found = problem(value[key], sub, _join(path, key))
            if found:
                return found
    return None


def problem_text(value: Any, shape: Shape, what: str) -> str | None:
    """``problem`` as one line: 'what: path: message' ('what: message' at the top)."""
    found = problem(value, shape)
    if found is None:
        return None
    path, message = found
    return f"{what}: {path}: {message}" if path else f"{what}: {message}"
