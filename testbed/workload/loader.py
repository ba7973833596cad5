"""Reading workload files: jinja2 templating, then a strict schema.

Same conventions as topology files (``testbed.model.document``): an optional first
document holding only ``variables:`` (template defaults), a line ``---``,
then the body. The body is rendered twice: a lenient first pass reads only
``matrix:`` and ``repeat:``, which decide the runs; each run is then rendered
with undefined variables as errors and parsed into a ``Workload``. Unknown keys are errors that name the
file, the YAML path and the line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import jinja2
import jinja2.meta

from testbed.model import document as tb_loader
from testbed.model.congestion import CC_RE, cc_problem
from testbed.model.document import Document

from testbed.errors import ConfigError
from testbed.files import NAME_MAX
from testbed.units import Duration, Rate, Size, UnitError
from testbed.workload.model import (FLOW_PROTOCOLS, Capture, Flow, RequestResponse,
                                    Sampling, Workload)

T = TypeVar("T")

TOP_KEYS = ("name", "description", "topology", "matrix", "repeat", "seed",
            "duration", "sampling", "capture", "flows", "schedule")
FLOW_KEYS = ("name", "from", "to", "protocol", "cc", "start", "duration", "size", "count",
             "rate", "packet_size", "rr", "driver", "rcvbuf", "sndbuf")
RR_KEYS = ("request", "response", "think")
SAMPLING_KEYS = ("tcp_info", "qdisc", "host", "tcp_events")
SAMPLING_PERIODS = ("tcp_info", "qdisc", "host")
CAPTURE_KEYS = ("enabled", "interfaces", "snaplen")
# a workload's name is a directory under the results and a flow's a file name
# prefix: no leading dot, so never '.', '..' or hidden
_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_NAME_RULE = (f"may use letters, digits, '_', '.' and '-', and may not start with '.' "
              f"(at most {NAME_MAX} characters)")
DEFAULT_DURATION = Duration(10.0)


@dataclass(frozen=True)
class WorkloadSource:
    """A workload file before a point is chosen: its text and sweep header."""

    file: Path
    text: str
    defaults: dict[str, Any]
    matrix: dict[str, list[Any]]
    repeat: int
    known: frozenset[str]       # variables of the file itself (header, template) and its matrix


# what a misplaced or misspelt key most likely meant (beyond close spellings)
SYNONYMS = {"src": "from", "source": "from", "dst": "to", "dest": "to", "destination": "to",
            "proto": "protocol", "congestion_control": "cc", "algorithm": "cc",
            "bandwidth": "rate", "bw": "rate", "length": "duration", "time": "duration",
            "flow": "flows", "repeats": "repeat", "repetitions": "repeat", "variables": "matrix",
            "parallel": "count", "streams": "count"}
# variables of the shipped topologies that other words are often written for
VARIABLE_SYNONYMS = {"buffer": "queue", "buf": "queue", "queue_size": "queue", "qlen": "queue",
                     "bandwidth": "rate", "bw": "rate", "rtt": "delay", "latency": "delay",
                     "drop": "loss", "congestion_control": "cc", "algorithm": "cc"}
# names that are settings of the run, not template variables
SET_HINTS = {"repeat": "repetitions are not a template variable: use --repeat N",
             "topology": "the topology file is named in the workload's 'topology:'"}


class _Ctx:
    """Error construction for one rendered file."""

    def __init__(self, file: Path, lines: dict[str, int]) -> None:
        self.file = file
        self.lines = lines

    def error(self, path: str, message: str) -> ConfigError:
        line = self.lines.get(path)
        if line is None and "." in path:
            line = self.lines.get(path.rsplit(".", 1)[0])
        return ConfigError(message, file=str(self.file), path=path or None, line=line)

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                sub = f"{path}.{key}" if path else str(key)
                guess = tb_loader.closest(str(key), allowed, SYNONYMS)
                hint = f" (did you mean {guess!r}?)" if guess else ""
                raise self.error(sub, f"unknown key {key!r}{hint}; allowed here: {', '.join(allowed)}")
        return value

    def unit(self, parse: Callable[[Any], T], value: Any, path: str) -> T:
        try:
            return parse(value)
        except UnitError as exc:
            raise self.error(path, str(exc)) from None

    def integer(self, value: Any, path: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(path, f"expected an integer >= {minimum}, got {value!r}")
        return value


def load_source(path: str | Path) -> WorkloadSource:
    """Read a workload file and what decides its runs: defaults, matrix, repeat."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such workload file", file=str(file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read workload file: {exc}", file=str(file)) from None
    defaults, data = tb_loader.render_lenient(text, str(file))
    ctx = _Ctx(file, {})
    if isinstance(data, dict) and "variables" in data:
        raise ctx.error("variables", "put 'variables:' in a first document ended by a line "
                        "'---', as in topology files")
    top = ctx.mapping(data, "", TOP_KEYS)
    matrix_raw = ctx.mapping(top.get("matrix"), "matrix", tuple(str(k) for k in top.get("matrix") or ()))
    matrix: dict[str, list[Any]] = {}
    for key, values in matrix_raw.items():
        if not isinstance(values, list) or not values:
            raise ctx.error(f"matrix.{key}", "a matrix entry is a non-empty list of values")
        matrix[str(key)] = values
    repeat = ctx.integer(top.get("repeat", 1), "repeat", 1)
    known = frozenset(tb_loader.known_variables(text, str(file)) | set(matrix))
    return WorkloadSource(file=file, text=text, defaults=defaults, matrix=matrix, repeat=repeat,
                          known=known)


def _topology_files(source: WorkloadSource, points: list[dict[str, Any]]) -> list[str]:
    """The topology files the workload names at ``points`` (a templated name may differ)."""
    files: list[str] = []
    for variables in points:
        try:
            _, data = tb_loader.render_lenient(source.text, str(source.file), variables)
        except ConfigError:
            continue      # the strict load of this point reports it
        topo = data.get("topology") if isinstance(data, dict) else None
        if isinstance(topo, str) and topo and (source.file.parent / topo).is_file():
            path = str((source.file.parent / topo).resolve())
            if path not in files:
                files.append(path)
    return files


def _known_from(source: WorkloadSource, files: list[str]) -> str:
    return "the workload" + "".join(f" and {os.path.relpath(f)}" for f in files)


def check_overrides(source: WorkloadSource, overrides: dict[str, Any],
                    points: list[dict[str, Any]]) -> None:
    """``--set`` may name only variables the workload or its topology knows; else one error.

    Variables flow from the workload into its topology file, so a topology's
    variables may be set too. ``points`` (the variables of each run) find the
    topology file even when its name is templated; it is read only when a name
    is not the workload's own.
    """
    known = set(source.known)
    if all(name in known for name in overrides):
        return
    files = _topology_files(source, points)
    for path in files:
        known |= tb_loader.known_variables(tb_loader.read(path), path)
    tb_loader.check_variables(overrides, known, str(source.file), hints=SET_HINTS,
                              known_from=_known_from(source, files))


def template_reads(text: str, file: str) -> set[str]:
    """The variables a file's template reads (not those its header only declares)."""
    _, body, _ = tb_loader.split_variables(text, file)
    tree = tb_loader.template_environment().parse(body)    # its syntax was checked by load_source
    return set(jinja2.meta.find_undeclared_variables(tree)) - {"env"}


def check_matrix_keys(source: WorkloadSource, points: list[dict[str, Any]]) -> None:
    """Each ``matrix:`` key must be read by the workload's template or its topology's: a key
    nothing reads (``buffer:`` for ``queue:``) would run every point alike. Checked like
    ``--set``: one error naming the key, with a did-you-mean."""
    reads = template_reads(source.text, str(source.file))
    unread = [key for key in source.matrix if key not in reads]
    if not unread:
        return
    files = _topology_files(source, points)
    for path in files:
        reads |= tb_loader.known_variables(tb_loader.read(path), path)
    for key in unread:
        if key in reads:
            continue
        guess = tb_loader.closest(key, reads - set(source.matrix), VARIABLE_SYNONYMS)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise _Ctx(source.file, {}).error(
            f"matrix.{key}", f"matrix key {key!r} is read by no template{hint}: every point would "
            f"run alike; variables read by {_known_from(source, files)}: "
            f"{', '.join(sorted(reads)) or 'none'}")


def load_workload(path: str | Path, variables: dict[str, Any] | None = None, *,
                  source: WorkloadSource | None = None) -> Workload:
    """Render the workload with its defaults overlaid by ``variables``; parse it strictly."""
    src = source or load_source(path)
    rendered, context = tb_loader.render(src.text, str(src.file), dict(variables or {}))
    data, lines = tb_loader.parse_yaml(rendered, str(src.file))
    return parse_workload(data, file=src.file, lines=lines, variables=context, rendered=rendered)


def _flow_cc(ctx: _Ctx, cc: Any, path: str, protocol: str) -> str | None:
    """A flow's ``cc:``: a name, for tcp, not a near miss of a known one."""
    if cc is None:
        return None
    if not isinstance(cc, str) or not CC_RE.fullmatch(cc):
        raise ctx.error(f"{path}.cc", f"congestion control must be a name such as 'cubic', got {cc!r}")
    if protocol != "tcp":
        raise ctx.error(f"{path}.cc", "congestion control applies to tcp flows only")
    problem = cc_problem(cc)
    if problem:
        raise ctx.error(f"{path}.cc", problem)
    return cc


def _parse_flow(ctx: _Ctx, raw: Any, path: str, index: int) -> Flow:
    f = ctx.mapping(raw, path, FLOW_KEYS)
    for key in ("from", "to"):
        if not isinstance(f.get(key), str) or not f[key]:
            raise ctx.error(f"{path}.{key}" if key in f else path,
                            f"a flow needs '{key}:' naming a node of the topology")
    name = str(f.get("name") or f"{f['from']}-{f['to']}-{index}")
    if not _NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        raise ctx.error(f"{path}.name", f"flow name {name!r} {_NAME_RULE}")
    protocol = f.get("protocol", "tcp")
    if protocol not in FLOW_PROTOCOLS:
        raise ctx.error(f"{path}.protocol", f"unknown protocol {protocol!r}; use tcp or udp")
    cc = _flow_cc(ctx, f.get("cc"), path, protocol)
    start = ctx.unit(Duration.parse, f.get("start", "0s"), f"{path}.start")
    duration = ctx.unit(lambda v: Duration.parse(v, allow_zero=False), f["duration"],
                        f"{path}.duration") if f.get("duration") is not None else None
    size = ctx.unit(Size.parse, f["size"], f"{path}.size") if f.get("size") is not None else None
    if duration is not None and size is not None:
        raise ctx.error(f"{path}.size", "give either 'duration' or 'size', not both")
    count = ctx.integer(f.get("count", 1), f"{path}.count", 1)
    rate = ctx.unit(Rate.parse, f["rate"], f"{path}.rate") if f.get("rate") is not None else None
    packet_size = ctx.unit(Size.parse, f.get("packet_size", "1200B"), f"{path}.packet_size")
    rr = None
    if f.get("rr") is not None:
        r = ctx.mapping(f["rr"], f"{path}.rr", RR_KEYS)
        for key in ("request", "response"):
            if key not in r:
                raise ctx.error(f"{path}.rr", f"request/response traffic needs '{key}:' (a size)")
        rr = RequestResponse(request=ctx.unit(Size.parse, r["request"], f"{path}.rr.request"),
                             response=ctx.unit(Size.parse, r["response"], f"{path}.rr.response"),
                             think=ctx.unit(Duration.parse, r.get("think", "0s"), f"{path}.rr.think"))
        if rr.request.bytes < 1 or rr.response.bytes < 1:
            raise ctx.error(f"{path}.rr", "request and response must be at least 1 byte")
        if protocol != "tcp":
            raise ctx.error(f"{path}.rr", "request/response flows run over tcp")
        if size is not None:
            raise ctx.error(f"{path}.size", "a request/response flow runs for a duration, not a size")
    if protocol == "udp":
        if rate is None:
            raise ctx.error(path, "a udp flow needs 'rate:' (e.g. 10mbit)")
        if size is not None:
            raise ctx.error(f"{path}.size", "udp flows run for a duration; give 'duration'")
        if not 28 <= packet_size.bytes <= 65000:
            raise ctx.error(f"{path}.packet_size", "udp payload must be between 28 and 65000 bytes")
    elif rate is not None and rr is None:
        pass  # tcp with a rate cap is allowed (iperf3 -b)
    driver = f.get("driver")
    if driver is not None and not isinstance(driver, str):
        raise ctx.error(f"{path}.driver", f"driver must be a name, got {driver!r}")
    rcvbuf, sndbuf = (_socket_buffer(ctx, f, key, path, protocol) for key in ("rcvbuf", "sndbuf"))
    return Flow(name=name, src=f["from"], dst=f["to"], protocol=protocol, cc=cc, start=start,
                duration=duration, size=size, count=count, rate=rate, packet_size=packet_size,
                rr=rr, driver=driver, rcvbuf=rcvbuf, sndbuf=sndbuf, yaml_path=path)


MIN_SOCKET_BUFFER = Size(4096)        # below a page the kernel rounds it up anyway


def _socket_buffer(ctx: _Ctx, f: dict[str, Any], key: str, path: str, protocol: str
                   ) -> Size | None:
    """``rcvbuf:``/``sndbuf:`` of a tcp flow: a size of at least 4 KB, or None."""
    if f.get(key) is None:
        return None
    size = ctx.unit(Size.parse, f[key], f"{path}.{key}")
    if protocol != "tcp":
        raise ctx.error(f"{path}.{key}", f"{key} applies to tcp flows only")
    if size < MIN_SOCKET_BUFFER:
        raise ctx.error(f"{path}.{key}", f"{key} must be at least {MIN_SOCKET_BUFFER.bytes} bytes, "
                        f"got {size.bytes}")
    return size


def parse_workload(data: Any, *, file: Path, lines: dict[str, int] | None = None,
                   variables: dict[str, Any] | None = None, rendered: str = "") -> Workload:
    """Build a ``Workload`` from parsed YAML (already rendered)."""
    ctx = _Ctx(file, lines or {})
    top = ctx.mapping(data, "", TOP_KEYS)
    name = str(top.get("name") or file.stem)
    if not _NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        raise ctx.error("name", f"workload name {name!r} {_NAME_RULE}")
    topology_path, topology_inline = _topology_of(ctx, file, top.get("topology"))
    duration = ctx.unit(lambda v: Duration.parse(v, allow_zero=False),
                        top.get("duration", str(DEFAULT_DURATION)), "duration")
    sampling, capture = _sampling(ctx, top), _capture(ctx, top)
    raw_flows = top.get("flows")
    if not isinstance(raw_flows, list) or not raw_flows:
        raise ctx.error("flows", "a workload needs 'flows:', a non-empty list")
    flows = tuple(_parse_flow(ctx, raw, f"flows[{i}]", i) for i, raw in enumerate(raw_flows))
    seen: dict[str, str] = {}
    for fl in flows:
        if fl.name in seen:
            raise ctx.error(f"{fl.yaml_path}.name", f"flow name {fl.name!r} is already used by {seen[fl.name]}")
        seen[fl.name] = fl.yaml_path
    seed = top.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ctx.error("seed", f"seed must be an integer, got {seed!r}")
    description = top.get("description") or ""
    return Workload(name=name, file=file.resolve(), description=str(description).strip(),
                    topology_path=topology_path, topology_inline=topology_inline,
                    variables=dict(variables or {}), flows=flows, duration=duration,
                    sampling=sampling, capture=capture, seed=seed, rendered_text=rendered,
                    schedule_doc=_schedule_doc(ctx, top.get("schedule")))


def _schedule_doc(ctx: _Ctx, schedule: Any) -> Document | None:
    """``schedule:`` kept with its lines, to be checked once the topology's links are known."""
    if schedule is None:
        return None
    if not isinstance(schedule, list):
        raise ctx.error("schedule", "schedule must be a list of {at, link, set} entries")
    return Document(str(ctx.file), schedule,
                    {k: v for k, v in ctx.lines.items() if k.startswith("schedule")})


def _topology_of(ctx: "_Ctx", file: Path, topo: Any) -> tuple[Path | None, dict[str, Any] | None]:
    """``topology:``: a path relative to the workload file, or an embedded mapping."""
    if isinstance(topo, str) and topo:
        path = (file.parent / topo).resolve()
        if not path.is_file():
            raise ctx.error("topology", f"topology file {topo!r} not found (looked at {path}; "
                            "paths are relative to the workload file)")
        return path, None
    if isinstance(topo, dict):
        return None, topo
    raise ctx.error("topology", "a workload needs 'topology:', a path (relative to the workload "
                    "file) or an embedded topology mapping")


def _sampling(ctx: "_Ctx", top: dict[str, Any]) -> Sampling:
    s = ctx.mapping(top.get("sampling"), "sampling", SAMPLING_KEYS)
    events = s.get("tcp_events", True)
    if not isinstance(events, bool):
        raise ctx.error("sampling.tcp_events", f"expected true or false, got {events!r}")
    sampling = Sampling(**{k: ctx.unit(lambda v: Duration.parse(v, allow_zero=False), s[k],
                                       f"sampling.{k}") for k in s if k in SAMPLING_PERIODS},
                        tcp_events=events)
    if sampling.tcp_info.seconds < 0.001:
        raise ctx.error("sampling.tcp_info", "tcp_info sampling faster than 1ms is not supported")
    return sampling


def _capture(ctx: "_Ctx", top: dict[str, Any]) -> Capture:
    c = ctx.mapping(top.get("capture"), "capture", CAPTURE_KEYS)
    if not c:
        return Capture()
    enabled = c.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ctx.error("capture.enabled", "expected true or false")
    ifaces = c.get("interfaces", ["bottleneck"])
    if isinstance(ifaces, str):
        ifaces = [ifaces]
    if not isinstance(ifaces, list) or not all(isinstance(i, str) and i for i in ifaces):
        raise ctx.error("capture.interfaces", "expected a list like [bottleneck] or ['r1:eth1']")
    snaplen = ctx.integer(c.get("snaplen", 128), "capture.snaplen", 64)
    return Capture(enabled=enabled, interfaces=tuple(ifaces), snaplen=snaplen)
