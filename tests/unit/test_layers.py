"""Imports go only down the data flow (STYLE.md 14), and no modules import each other in a circle.

Every module under testbed/ is parsed with ``ast``; every import of a testbed
module counts, at the top or inside a function. A module's floor is that of
its package (or, on the ground floor, of itself). Same-floor imports are
allowed; a circle among modules is not, wherever it is. Some packages may
import less than everything below them (``MAY_IMPORT``, the table of
docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "testbed"

FLOORS = [
    {"errors", "units", "results", "signals", "version", "shape", "files", "output", "pcapfile"},
    {"model"},
    {"workload"},
    {"plan"},
    {"kernel"},
    {"realize"},
    {"emulation"},
    {"instance"},
    {"traffic", "collect"},
    {"run"},
    {"analysis", "remote", "guest"},
    {"cli"},
    {"pytest_plugin", "__main__", "__init__"},
]
GROUND = FLOORS[0]
# packages that may import less than every floor below them (besides their own modules)
MAY_IMPORT = {
    "model": GROUND,
    "workload": GROUND | {"model"},
    "plan": GROUND | {"model"},
    "kernel": GROUND,
    "traffic": GROUND | {"workload", "kernel", "collect"},
    "collect": GROUND | {"workload", "kernel", "traffic"},
    # analysis reads run directories (the ground floor's formats), never the code that writes
    # them: so compare needs no root and no pyroute2
    "analysis": GROUND,
}

# (importer, imported) -> why it is allowed for now
KNOWN_UPWARD: dict[tuple[str, str], str] = {}
KNOWN_CIRCLES: dict[frozenset[str], str] = {}


def module_files() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def imported(module: str, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> list[str]:
    """The testbed modules an import statement loads (``from pkg import mod`` is ``pkg.mod``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "testbed"]
    base = node.module or ""
    if node.level:
        package = module.split(".") if mods[module].name == "__init__.py" \
            else module.split(".")[:-1]
        package = package[:len(package) - node.level + 1]
        base = ".".join(package + ([node.module] if node.module else []))
    if base.split(".")[0] != "testbed":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]


def import_graph() -> dict[str, set[str]]:
    mods = module_files()
    graph = {}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[module] = {target for node in ast.walk(tree)
                         if isinstance(node, (ast.Import, ast.ImportFrom))
                         for target in imported(module, node, mods) if target != module}
    return graph


def unit(module: str) -> str:
    """The package (or ground-floor module) a module belongs to; the package itself is __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor(module: str) -> int:
    name = unit(module)
    for level, names in enumerate(FLOORS):
        if name in names:
            return level
    raise AssertionError(f"{module}: its package {name!r} is on no floor; add it to FLOORS")


def wrong_imports(graph: dict[str, set[str]]) -> dict[tuple[str, str], str]:
    found = {}
    for module, targets in graph.items():
        for target in targets:
            mine, theirs = unit(module), unit(target)
            allowed = MAY_IMPORT.get(mine)
            if floor(target) > floor(module):
                found[(module, target)] = f"{mine} imports {theirs}, a higher floor"
            elif allowed is not None and theirs != mine and theirs not in allowed:
                found[(module, target)] = f"{mine} may import only {', '.join(sorted(allowed))}"
    return found


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_or_is_a_known_exception():
    wrong = wrong_imports(import_graph())
    new = {k: v for k, v in wrong.items() if k not in KNOWN_UPWARD}
    assert not new, "imports that break the layers:\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(new.items()))


def test_known_exceptions_are_still_needed():
    wrong = wrong_imports(import_graph())
    fixed = [k for k in KNOWN_UPWARD if k not in wrong]
    assert not fixed, f"fixed, take them out of KNOWN_UPWARD: {fixed}"


def test_no_circles():
    found = [c for c in circles(import_graph()) if c not in KNOWN_CIRCLES]
    assert not found, "modules that import each other in a circle:\n" + "\n".join(
        "  " + ", ".join(sorted(c)) for c in found)


def test_the_checker_sees_upward_and_in_function_imports(tmp_path):
    mods = {"testbed.kernel.x": tmp_path / "x.py", "testbed.cli.main": tmp_path / "main.py",
            "testbed.cli": tmp_path / "__init__.py"}
    tree = ast.parse("def f():\n    from testbed.cli import main\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    graph = {"testbed.kernel.x": set(imported("testbed.kernel.x", node, mods)),
             "testbed.cli.main": {"testbed.kernel.x"}}
    assert graph["testbed.kernel.x"] == {"testbed.cli.main"}
    assert set(wrong_imports(graph)) == {("testbed.kernel.x", "testbed.cli.main")}
    assert circles(graph) == [frozenset({"testbed.kernel.x", "testbed.cli.main"})]
