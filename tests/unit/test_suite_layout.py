"""The suite's own layout: pytest collects tests/ without packages (no __init__.py), so
two test modules with one basename make the whole run stop at collection."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parents[1]


def test_no_two_test_modules_share_a_basename():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1]
