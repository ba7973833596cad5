"""The conditions a run really had: each link direction's emulation as the
backend has it in force, and, for a run on an attached testbed, where the
workload's variables say something else about it.

``link_directions`` reads (never changes) the live configuration of a testbed
that is up; ``mismatches`` compares it, and the topology the testbed was built
from, with what the workload's variables make of the same topology. Which
topology values a variable feeds is found by rendering the template again with
that variable replaced by a marker: no guessing from variable names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from testbed.model import document as loader
from testbed.errors import ConfigError, TestbedError
from testbed.plan.deployed import Deployed
from testbed.model.impairment import FIELD_NAMES, IMPAIRMENT_KEYS, GilbertElliott, Impairment
from testbed.units import Duration, Percent, Rate, Size, UnitError
from testbed.instance.network import plan_for

MARKER = "tb-variable-probe-7f3a"
_LINK_PATH = re.compile(r"links\[(\d+)\](?:\.(forward|reverse))?\.(\w+)")




def impairment_fields(imp: Impairment | None) -> dict[str, Any]:
    """An impairment as plain JSON fields in base units, as ``status --json`` gives them
    (``Impairment.as_fields``), every field present (None: not set); ``loss`` of a
    Gilbert-Elliott model is its mean loss."""
    imp = imp or Impairment()
    out: dict[str, Any] = {k: None for k in FIELD_NAMES}
    out.update(imp.as_fields())
    if isinstance(imp.loss, GilbertElliott):
        out["loss"] = imp.loss.mean_loss
    out["describe"] = imp.describe()
    return out


def link_directions(deployed: Deployed, state_dir: Path) -> list[dict[str, Any]]:
    # emulation.live brings the link backends (pyroute2, ~0.3 s): only on this path
    """Every direction of every link of a testbed that is up, as its backend has it in force."""
    from testbed.emulation import live
    out = []
    for d in deployed.directions:
        try:
            imp = live.configured(deployed, d, state_dir)
            error = None
        except (OSError, ValueError, TestbedError) as exc:
            imp, error = None, f"could not read: {exc}"
        entry = {"link": d.link.name, "link_index": d.link.index, "direction": d.label,
                 "side": d.side,
                 "at": f"{d.sender}:{d.ifname}", "emulated": imp is not None,
                 "backend": deployed.link_backend if imp is not None else None,
                 **impairment_fields(imp)}
        if error:
            entry["error"] = error
        out.append(entry)
    return out


def _flatten(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _flatten(v, f"{path}.{k}" if path else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _flatten(v, f"{path}[{i}]")
    else:
        yield path, data


def _same(a: Any, b: Any) -> bool:
    """Equal values, as quantities when both read as the same kind (10mbit == 10Mbit)."""
    if a == b:
        return True
    for parse in (Rate.parse, Duration.parse, Percent.parse, Size.parse):
        try:
            x, y = parse(a), parse(b)
        except (UnitError, ValueError, TypeError):
            continue
        return x == y
    return str(a).strip() == str(b).strip()


def fed_paths(text: str, file: str, variables: dict[str, Any], name: str) -> list[str] | None:
    """YAML paths of the rendered template whose value depends on variable ``name``
    (empty: it does not feed the template; None: it does, but where is unknown)."""
    try:
        base, _ = loader.parse_yaml(loader.render(text, file, variables)[0], file)
    except ConfigError:
        return None
    try:
        probe, _ = loader.parse_yaml(
            loader.render(text, file, {**variables, name: MARKER})[0], file)
    except ConfigError:
        return None                      # used in arithmetic or a test: it feeds, somewhere
    a, b = dict(_flatten(base)), dict(_flatten(probe))
    return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))


def mismatches(wl: Any, expected: Any, deployed: Deployed,
               live_dirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the workload's variables disagree with an attached testbed.

    ``expected``: the workload's topology loaded with its variables; ``deployed``: the
    testbed; ``live_dirs``: its ``link_directions``. Only variables that feed
    the topology count (a workload without variables takes the testbed as it is):
    the topology values they make are compared with the ones the testbed was built
    with (its rendered topology) and, for link emulation, with what is in force now
    (``testbed link set`` may have changed it since).
    """
    if not wl.variables:
        return []
    out: list[dict[str, Any]] = []
    fed: dict[str, list[str] | None] = {}
    if wl.topology_path is None:
        fed = {"(inline topology)": None}   # rendered with the workload: any variable may feed it
    else:
        file = str(wl.topology_path)
        built_from = deployed.file
        if not built_from or Path(built_from).resolve() != Path(file).resolve():
            return [{"variable": None, "workload": file, "testbed": built_from,
                     "where": "topology file", "path": None,
                     "message": f"the testbed was built from {built_from}, the workload "
                                f"names {file}"}]
        text = Path(file).read_text(encoding="utf-8")
        for name in wl.variables:
            paths = fed_paths(text, file, dict(wl.variables), name)
            if paths != []:
                fed[name] = paths
        out += _built_differently(wl, expected.source, deployed.source, file, fed)
    planned = {d.label: d.impairment
               for link in plan_for(expected, deployed.instance).links for d in link.directions}
    return _unique(out + _in_force_differently(wl, fed, planned, live_dirs))


def _built_differently(wl: Any, mine_text: str, built_text: str, file: str,
                       fed: dict[str, list[str] | None]) -> list[dict[str, Any]]:
    """Topology values the fed variables make otherwise than the testbed was built with."""
    mine = dict(_flatten(loader.parse_yaml(mine_text, file)[0])) if mine_text else {}
    built = dict(_flatten(loader.parse_yaml(built_text, file)[0])) if built_text else {}
    out = []
    for name, paths in fed.items():
        for path in paths or []:
            if path in built and path in mine and not _same(built[path], mine[path]):
                out.append({"variable": name, "workload": wl.variables[name], "path": path,
                            "testbed": built[path], "where": "as built",
                            "message": f"{name}={wl.variables[name]} makes {path} "
                                       f"{mine[path]}; the testbed was built with "
                                       f"{built[path]}"})
    return out


def _in_force_differently(wl: Any, fed: dict[str, list[str] | None],
                          planned: dict[str, Impairment],
                          live_dirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Link directions whose emulation in force is not what the fed variables make."""
    out = []
    for name, paths in fed.items():
        value = wl.variables.get(name, "")
        for d in live_dirs:
            want = planned.get(d["direction"])
            if want is None:
                continue
            exp = impairment_fields(want)
            for key in _keys_addressed(paths, d):
                cols = _columns(key)
                if all(exp[c] == d.get(c) or _close(exp[c], d.get(c)) for c in cols):
                    continue
                said = f"{name}={value}" if paths is not None else "the workload's inline topology"
                out.append({"variable": name if paths is not None else None,
                            "workload": value if paths is not None else None,
                            "path": f"{d['link']} {d['direction']} {key}",
                            "testbed": {c: d.get(c) for c in cols}, "where": "in force",
                            "message": f"{said} means {d['direction']} {key} {_show(want, key)}; "
                                       f"in force: {d.get('describe')}"})
    return out


def _keys_addressed(paths: list[str] | None, d: dict[str, Any]) -> list[str]:
    """The impairment keys of direction ``d`` that the fed paths set (None: all)."""
    if paths is None:
        return list(IMPAIRMENT_KEYS)
    keys: set[str] = set()
    for p in paths:
        m = _LINK_PATH.fullmatch(p)
        if m:
            if int(m.group(1)) == d["link_index"] and m.group(2) in (None, d["side"]) \
                    and m.group(3) in IMPAIRMENT_KEYS:
                keys.add(m.group(3))
        elif p.rsplit(".", 1)[-1] in IMPAIRMENT_KEYS:
            keys.add(p.rsplit(".", 1)[-1])      # e.g. a default for every link
    return sorted(keys)


def _columns(key: str) -> tuple[str, ...]:
    return {"rate": ("rate_bps",), "delay": ("delay_s",), "jitter": ("jitter_s",),
            "loss": ("loss", "loss_gilbert_elliott")}.get(key, (key,))


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)
    # an unset loss and 0 % are the same condition
    return (a in (None, 0, 0.0)) and (b in (None, 0, 0.0))


def _show(imp: Impairment, key: str) -> str:
    value = getattr(imp, key)
    return "none" if value is None else str(value)


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for m in items:
        if m["message"] not in seen:
            seen.add(m["message"])
            out.append(m)
    return out


def messages(found: list[dict[str, Any]]) -> list[str]:
    """One line per problem: a variable that was built differently is said once (what is in
    force for it follows from that); one built right but changed since says what is in force."""
    built = {m["variable"] for m in found if m["where"] == "as built"}
    return list(dict.fromkeys(m["message"] for m in found
                              if m["where"] != "in force" or m["variable"] not in built))
