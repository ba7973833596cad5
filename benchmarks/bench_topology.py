"""Build and tear down big topologies: testbed (CLI and API) vs the floor vs Mininet 2.3.0.

Scenarios (GitHub issue 2):

- ``line-N`` (N = 10, 100, 1000): testbed's ``topologies/line.yaml`` with
  ``--set routers=N``: h1 - r1 - ... - rN - h2, N+2 namespaces, N+1 veth
  pairs, addresses, static routes to every host subnet, forwarding sysctls.
- ``star-100``: ``topologies/star.yaml --set hosts=100``: 100 hosts around
  one router, 101 namespaces, 100 veth pairs.

Tools, each timed as wall time, median of ``--runs`` (1 run for N=1000):

- ``testbed CLI``: ``testbed up TOPO --set ... --name X`` and ``testbed down
  --name X``, two separate processes, so Python start-up and imports count;
  RSS is the peak resident set of those processes (``wait4``).
- ``testbed API``: a fresh Python process times ``testbed.up(...)`` and
  ``net.down()`` (imports excluded); RSS is that process's peak.
- ``floor``: ``ip -batch`` creating only the same namespaces and veth pairs
  (no addresses, routes, sysctls, links left down), then ``ip -batch``
  deleting the namespaces. Names are ``tbbench-<pid>-<n>``.
- ``Mininet API`` / ``Mininet CLI``: Mininet 2.3.0 from Debian with
  ``LinuxBridge`` switches and no controller. Mininet has no routers: a
  ``line-N`` is the same shape with switches in place of routers
  (h1 - s1 - ... - sN - h2, a ``chain`` topology defined at the end of this
  file and loaded by ``mn --custom``), i.e. the same node and link count,
  but Mininet's switches are Linux bridges in the root namespace with a
  shell each, not namespaces, and it configures one address per host and no
  routes. ``star-100`` is ``--topo single,100``: the same shape exactly.
  API: ``Mininet(topo, switch=LinuxBridge, controller=None)`` + ``start()``
  is "up", ``stop()`` is "down". CLI: ``mn --custom ... --topo ... --switch
  lxbr --controller none --test none`` is one process; "up" runs until it
  prints ``*** Stopping``, "down" from there to its exit.

Mininet kills by name (``killall``, ``pkill -9 -f``) and deletes
``/tmp/*.log`` on errors and in ``mn -c``, so every Mininet process runs
inside private pid, mount and network namespaces with its own /tmp
(``unshare --pid --fork --mount-proc --mount --net``): it can only see and
kill its own processes, its bridges and root-side veths live in a throwaway
network namespace, and everything it made dies with it on a timeout.

After every run the benchmark checks that nothing is left: no namespace
named for the run, no /run/testbed/<name>; then it waits until the kernel
has destroyed the run's namespaces (it does so after ``down`` returns, in a
kernel worker), so that work does not slow the next run. The tools of a
scenario take turns run by run, so a change of the machine's load hits each
alike. Besides wall time, each ``up`` reports its CPU time (user + system of
the process tree), which a busy machine distorts much less.

Run as root on a quiet machine (load < 1):

    /tmp/venv/bin/python benchmarks/bench_topology.py [--runs 3] [--json out.json]
        [--scenarios line-10,line-100,line-1000,star-100] [--no-mininet]
        [--mininet-timeout 300] [--prefix tbb]
    /tmp/venv/bin/python benchmarks/bench_topology.py --vs-floor
        # testbed CLI and API against the floor, 100 and 1000 routers, 5 runs each

It asserts nothing about time (a benchmark is not a test); it marks each
target of issue 2 as met or missed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

# `mn --custom` executes this file without __file__; it needs only `topos` (at the end)
HERE = Path(globals().get("__file__", ".")).resolve().parent
REPO = HERE.parent
SYSTEM_PYTHON = "/usr/bin/python3"
GNU_TIME = shutil.which("time", path="/usr/bin:/bin")     # apt-get install time        # Debian's mininet module lives here
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--mount", "--net", "--",
           "sh", "-c", 'mount -t tmpfs tmpfs /tmp && ip link set lo up && exec "$@"', "sh"]

# name: (topology file, variable, N, Mininet --topo argument)
SCENARIOS = {
    "line-10": ("line.yaml", "routers", 10, "chain,10"),
    "line-100": ("line.yaml", "routers", 100, "chain,100"),
    "line-1000": ("line.yaml", "routers", 1000, "chain,1000"),
    "star-100": ("star.yaml", "hosts", 100, "single,100"),
}
TOOLS = ("testbed CLI", "testbed API", "floor", "Mininet API", "Mininet CLI")


# ----------------------------------------------------------------- results


@dataclass
class Sample:
    up: float | None = None
    down: float | None = None
    rss_mb: float | None = None       # peak resident set of the controller process(es)
    cpu: float | None = None          # user + system CPU seconds of the up process(es)
    error: str | None = None
    load: float | None = None         # 1-minute load average when the run started


@dataclass
class Cell:
    scenario: str
    tool: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples if getattr(s, attr) is not None]
        return statistics.median(values) if values else None

    @property
    def error(self) -> str | None:
        errors = [s.error for s in self.samples if s.error]
        return errors[0] if errors else None


# ----------------------------------------------------------------- helpers


class Timeout(Exception):
    """A run was killed at its time limit; ``output`` is what it printed until then."""

    def __init__(self, output: str) -> None:
        super().__init__("timeout")
        self.output = output


@dataclass
class Ran:
    """One finished command: wall and CPU seconds, peak RSS (MB), exit code, output."""

    wall: float
    cpu: float
    rss_mb: float | None
    rc: int
    output: str


def run_rss(argv: list[str], *, timeout: float | None = None,
            on_line: Callable[[str], None] | None = None) -> Ran:
    """Run ``argv``: its wall time, CPU time (user + system of the whole process tree),
    peak RSS in MB of its process tree, exit code and output.

    The RSS comes from GNU time around the command: ru_maxrss of a child of
    this process would start at this process's own size (exec keeps the
    forked image's high-water mark), hiding anything smaller. ``on_line`` is
    called with each output line as it arrives. On timeout, kills the whole
    process group and raises Timeout.
    """
    with tempfile.NamedTemporaryFile("r", prefix="tbbench-rss-") as rss_file:
        wrapped = ([GNU_TIME, "-f", "%M", "-o", rss_file.name] if GNU_TIME else []) + argv
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        lines: list[str] = []

        def read() -> None:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                lines.append(line)
                if on_line is not None:
                    on_line(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)   # Mininet: its pid namespace's init dies too
            proc.wait()
            reader.join(timeout=5)
            raise Timeout("".join(lines)) from None
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        reader.join(timeout=5)
        rss_lines = rss_file.read().split()
    rss_mb = int(rss_lines[-1]) / 1024 if rss_lines and rss_lines[-1].isdigit() else None
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Ran(wall, cpu, rss_mb, proc.returncode, "".join(lines))


def _max(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def leftovers(prefix: str, instance: str | None = None) -> list[str]:
    """Namespaces starting with ``prefix`` and the instance's state dir, if any exist."""
    found = [n for n in _netns_names() if n.startswith(prefix)]
    if instance and Path("/run/testbed", instance).exists():
        found.append(f"/run/testbed/{instance}")
    return found


def _netns_names() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


def shape(scenario: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Node and link names of a scenario, in testbed's order (for the floor)."""
    _, var, n, _ = SCENARIOS[scenario]
    if var == "routers":
        nodes = ["h1", "h2"] + [f"r{i}" for i in range(1, n + 1)]
        links = [("h1", "r1")] + [(f"r{i}", f"r{i + 1}") for i in range(1, n)] + \
                [(f"r{n}", "h2")]
    else:
        nodes = ["r0"] + [f"h{i}" for i in range(1, n + 1)]
        links = [(f"h{i}", "r0") for i in range(1, n + 1)]
    return nodes, links


# ----------------------------------------------------------------- testbed


def bench_testbed_cli(scenario: str, run: int, testbed_bin: str, prefix: str) -> Sample:
    topo, var, n, _ = SCENARIOS[scenario]
    name = f"{prefix}{os.getpid()}c{run}"
    up_argv = [testbed_bin, "up", str(REPO / "topologies" / topo), "--set", f"{var}={n}",
               "--name", name]
    sample = Sample()
    try:
        up = run_rss(up_argv)
        if up.rc != 0:
            sample.error = f"up failed ({up.rc}): {up.output.strip().splitlines()[-1:]}"
            return sample
        sample.up, sample.cpu = up.wall, up.cpu
        down = run_rss([testbed_bin, "down", "--name", name])
        if down.rc != 0:
            sample.error = f"down failed ({down.rc}): {down.output.strip().splitlines()[-1:]}"
            return sample
        sample.down = down.wall
        sample.rss_mb = _max(up.rss_mb, down.rss_mb)
    finally:
        _ensure_testbed_gone(name, testbed_bin)
    return sample


API_SCRIPT = r"""
import json, resource, sys, time
import testbed
path, var, n, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
t0, c0 = time.monotonic(), time.process_time()
net = testbed.up(path, variables={var: n}, name=name)
t1, c1 = time.monotonic(), time.process_time()
net.down()
t2 = time.monotonic()
print(json.dumps({"up": t1 - t0, "down": t2 - t1, "cpu": c1 - c0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def bench_testbed_api(scenario: str, run: int, python: str, prefix: str) -> Sample:
    topo, var, n, _ = SCENARIOS[scenario]
    name = f"{prefix}{os.getpid()}a{run}"
    sample = Sample()
    try:
        ran = run_rss([python, "-c", API_SCRIPT, str(REPO / "topologies" / topo), var, str(n),
                       name])
        if ran.rc != 0:
            sample.error = f"API run failed ({ran.rc}): {ran.output.strip().splitlines()[-1:]}"
            return sample
        data = json.loads(ran.output.strip().splitlines()[-1])
        sample.up, sample.down, sample.rss_mb = data["up"], data["down"], data["rss_mb"]
        sample.cpu = data["cpu"]
    finally:
        _ensure_testbed_gone(name, str(Path(python).with_name("testbed")))
    return sample


def _ensure_testbed_gone(name: str, testbed_bin: str) -> None:
    left = leftovers(f"tb-{name}-", name)
    if left:
        subprocess.run([testbed_bin, "down", "--name", name], capture_output=True)
        left = leftovers(f"tb-{name}-", name)
        raise RuntimeError(f"testbed left {len(left)} things behind for {name}: {left[:3]}")


# ----------------------------------------------------------------- floor


def bench_floor(scenario: str, run: int, name_prefix: str) -> Sample:
    nodes, links = shape(scenario)
    prefix = f"{name_prefix}ench-{os.getpid()}-{run}-"
    ns = {node: f"{prefix}{node}" for node in nodes}
    next_if: dict[str, int] = {node: 0 for node in nodes}
    up_lines = [f"netns add {ns[node]}" for node in nodes]
    for a, b in links:
        ia, ib = next_if[a], next_if[b]
        next_if[a] += 1
        next_if[b] += 1
        up_lines.append(f"link add eth{ia} netns {ns[a]} type veth peer name eth{ib} "
                        f"netns {ns[b]}")
    down_lines = [f"netns delete {ns[node]}" for node in nodes]
    sample = Sample()
    with tempfile.TemporaryDirectory() as tmp:
        up_file, down_file = Path(tmp, "up"), Path(tmp, "down")
        up_file.write_text("\n".join(up_lines) + "\n")
        down_file.write_text("\n".join(down_lines) + "\n")
        try:
            up = run_rss(["ip", "-batch", str(up_file)])
            if up.rc != 0:
                sample.error = f"ip -batch up failed: {up.output.strip()[:200]}"
                return sample
            sample.up, sample.cpu, sample.rss_mb = up.wall, up.cpu, up.rss_mb
            down = run_rss(["ip", "-batch", str(down_file)])
            if down.rc != 0:
                sample.error = f"ip -batch down failed: {down.output.strip()[:200]}"
                return sample
            sample.down = down.wall
            sample.rss_mb = _max(sample.rss_mb, down.rss_mb)
        finally:
            left = leftovers(prefix)
            if left:      # only ever our own exact names
                subprocess.run(["ip", "-force", "-batch", "-"], input="".join(
                    f"netns delete {n}\n" for n in left).encode(), capture_output=True)
    return sample


# ----------------------------------------------------------------- Mininet


MN_API_SCRIPT = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import SingleSwitchTopo
import bench_topology
kind, n = sys.argv[1], int(sys.argv[2])
setLogLevel("warning")
topo = bench_topology.topos["chain"](n) if kind == "chain" else SingleSwitchTopo(n)
t0 = time.monotonic()
net = Mininet(topo=topo, switch=LinuxBridge, controller=None)
net.start()
t1 = time.monotonic()
print(json.dumps({"up": t1 - t0}), flush=True)
net.stop()
t2 = time.monotonic()
print(json.dumps({"up": t1 - t0, "down": t2 - t1,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def mininet_available() -> str | None:
    """None if Mininet can be benchmarked here, else why not."""
    if shutil.which("mn") is None or shutil.which("mnexec") is None:
        return "mn not installed (apt-get install mininet bridge-utils)"
    if shutil.which("brctl") is None:
        return "brctl missing (apt-get install bridge-utils), needed by --switch lxbr"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import mininet.net, mininet.nodelib"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} cannot import mininet: {probe.stderr.strip()[-200:]}"
    return None


def bench_mininet_api(scenario: str, timeout: float) -> Sample:
    kind, _, n = SCENARIOS[scenario][3].partition(",")
    sample = Sample()
    try:
        ran = run_rss(UNSHARE + [SYSTEM_PYTHON, "-c", MN_API_SCRIPT, kind, n, str(HERE)],
                      timeout=timeout)
    except Timeout as exc:
        lines = [l for l in exc.output.splitlines() if l.startswith("{")]
        sample.up = json.loads(lines[0])["up"] if lines else None
        sample.error = "timeout"
        return sample
    if ran.rc != 0:
        sample.error = f"failed ({ran.rc}): {ran.output.strip().splitlines()[-1:]}"
        return sample
    data = json.loads(ran.output.strip().splitlines()[-1])
    sample.up, sample.down, sample.rss_mb = data["up"], data["down"], data["rss_mb"]
    return sample


def bench_mininet_cli(scenario: str, timeout: float) -> Sample:
    """``mn ... --test none``; up = start to '*** Stopping', down = from there to exit."""
    argv = UNSHARE + ["mn", "--custom", str(HERE / "bench_topology.py"),
                      "--topo", SCENARIOS[scenario][3], "--switch", "lxbr",
                      "--controller", "none", "--test", "none"]
    sample = Sample()
    stopping: list[float] = []

    def watch(line: str) -> None:
        if line.startswith("*** Stopping") and not stopping:
            stopping.append(time.monotonic())

    started = time.monotonic()
    try:
        ran = run_rss(argv, timeout=timeout, on_line=watch)
    except Timeout:
        sample.up = stopping[0] - started if stopping else None
        sample.error = "timeout"
        return sample
    if ran.rc != 0 or not stopping:
        sample.error = f"mn failed ({ran.rc}): {[l.strip() for l in ran.output.splitlines()[-3:]]}"
        return sample
    sample.up = stopping[0] - started
    sample.down = started + ran.wall - stopping[0]
    sample.rss_mb = ran.rss_mb
    return sample


def _mn_chain(n: str | int = 2):
    """Mininet topology of a testbed line: h1 - s1 - ... - sN - h2 (for ``mn --custom``)."""
    from mininet.topo import Topo

    n = int(n)
    topo = Topo()
    h1, h2 = topo.addHost("h1"), topo.addHost("h2")
    switches = [topo.addSwitch(f"s{i}") for i in range(1, n + 1)]
    topo.addLink(h1, switches[0])
    for a, b in zip(switches, switches[1:]):
        topo.addLink(a, b)
    topo.addLink(switches[-1], h2)
    return topo


topos = {"chain": _mn_chain}      # read by `mn --custom bench_topology.py --topo chain,N`


# ----------------------------------------------------------------- report


TARGETS = [
    # (scenario, tool, attribute, limit, description); attribute "up/floor" is the ratio
    # of the medians of testbed's up and the floor's up, measured interleaved
    ("line-100", "testbed CLI", "up", 1.0, "100 nodes up < 1 s (CLI)"),
    ("line-100", "testbed CLI", "down", 0.5, "100 nodes down < 0.5 s (CLI)"),
    ("star-100", "testbed CLI", "up", 1.0, "100-host star up < 1 s (CLI)"),
    ("star-100", "testbed CLI", "down", 0.5, "100-host star down < 0.5 s (CLI)"),
    ("line-1000", "testbed CLI", "up", 10.0, "1000 nodes up < 10 s (CLI)"),
    ("line-1000", "testbed CLI", "rss_mb", 150.0, "controller RSS < 150 MB at 1000 nodes (CLI)"),
    ("line-1000", "testbed API", "rss_mb", 150.0, "controller RSS < 150 MB at 1000 nodes (API)"),
    ("line-100", "testbed CLI", "up/floor", 2.0, "100 routers up within 2x of the floor (CLI)"),
    ("line-1000", "testbed CLI", "up/floor", 2.0, "1000 routers up within 2x of the floor (CLI)"),
]
# --vs-floor: the architecture issue's comparison, in one command
VS_FLOOR = {"scenarios": "line-100,line-1000", "tools": "testbed CLI,testbed API,floor",
            "runs": 5, "big_runs": 5}


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:.2f}{unit}" if value < 100 else f"{value:.0f}{unit}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _value(cells: dict[tuple[str, str], Cell], scenario: str, tool: str,
           attr: str) -> float | None:
    """A cell's median of ``attr``; ``up/floor`` is its up median over the floor's."""
    cell = cells.get((scenario, tool))
    if cell is None:
        return None
    if attr != "up/floor":
        return cell.median(attr)
    floor = cells.get((scenario, "floor"))
    up, floor_up = cell.median("up"), floor.median("up") if floor else None
    return up / floor_up if up is not None and floor_up else None


def render(cells: dict[tuple[str, str], Cell], scenarios: list[str]) -> str:
    lines = ["| scenario | tool | runs | up s | up CPU s | down s | peak RSS MB | up vs floor "
             "(paired) | up CPU vs floor | up vs Mininet API / CLI | down vs Mininet API / CLI |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scenario in scenarios:
        for tool in TOOLS:
            cell = cells.get((scenario, tool))
            if cell is not None:
                lines.append(_row(cells, cell))
    lines.append("")
    lines.append("Ratios are testbed / other (below 1 = testbed faster): of the medians, and "
                 "in brackets the median of the ratios of runs made one after the other; up "
                 "CPU is user + system time of the up process (the kernel's asynchronous work "
                 "not counted).")
    lines.append("")
    lines.append("Targets:")
    for scenario, tool, attr, limit, text in TARGETS:
        if scenario not in scenarios:
            continue
        value = _value(cells, scenario, tool, attr)
        verdict = "not measured" if value is None else \
            ("met" if value < limit else "MISSED") + f" ({value:.2f})"
        lines.append(f"- {text}: {verdict}")
    return "\n".join(lines)


def _row(cells: dict[tuple[str, str], Cell], cell: Cell) -> str:
    scenario, tool = cell.scenario, cell.tool
    up, down = cell.median("up"), cell.median("down")
    if up is None and cell.error:
        return f"| {scenario} | {tool} | {len(cell.samples)} | {cell.error[:60]} | | | | | | | |"
    vs_floor = cpu_vs_floor = vs_mn_up = vs_mn_down = ""
    floor = cells.get((scenario, "floor"))
    if tool.startswith("testbed") and floor is not None:
        vs_floor = f"{_ratio(up, floor.median('up'))} ({_paired_ratio(cell, floor)})"
        cpu_vs_floor = _ratio(cell.median("cpu"), floor.median("cpu"))
    if tool.startswith("testbed"):
        # CLI against CLI and API against API first; both shown
        api_up, cli_up = (_value(cells, scenario, t, "up") for t in ("Mininet API", "Mininet CLI"))
        api_down, cli_down = (_value(cells, scenario, t, "down")
                              for t in ("Mininet API", "Mininet CLI"))
        vs_mn_up = f"{_ratio(up, api_up)} / {_ratio(up, cli_up)}"
        vs_mn_down = f"{_ratio(down, api_down)} / {_ratio(down, cli_down)}"
    down_text = cell.error[:40] if down is None and cell.error else _fmt(down)
    return (f"| {scenario} | {tool} | {len(cell.samples)} | {_fmt(up)} | "
            f"{_fmt(cell.median('cpu'))} | {down_text} | {_fmt(cell.median('rss_mb'))} | "
            f"{vs_floor} | {cpu_vs_floor} | {vs_mn_up} | {vs_mn_down} |")


def _paired_ratio(cell: Cell, floor: Cell) -> str:
    """Median of up / floor's up over the runs made one after the other (same run number):
    a change of the machine's load between runs cancels out."""
    ratios = [s.up / f.up for s, f in zip(cell.samples, floor.samples) if s.up and f.up]
    return f"{statistics.median(ratios):.2f}x" if ratios else "-"


# ----------------------------------------------------------------- main


def _net_namespaces_alive() -> int | None:
    """Network namespaces the kernel still holds (made or not yet destroyed), from slabinfo."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def settle(baseline: int | None, timeout: float) -> None:
    """Wait until the kernel has destroyed the namespaces of the last run.

    ``down`` returns before the kernel has freed the namespaces (cleanup_net runs
    in a kernel worker), and that work would slow whichever run comes next.
    Waits until no more than ``baseline`` (the count before the run) + 5 are
    alive, or ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while baseline is not None and time.monotonic() < deadline:
        alive = _net_namespaces_alive()
        if alive is None or alive <= baseline + 5:
            return
        time.sleep(0.1)


def byte_compile() -> None:
    """Compile testbed's modules as an install does: with PYTHONDONTWRITEBYTECODE set,
    every CLI run would otherwise compile the whole package from source."""
    import compileall
    import testbed

    compileall.compile_dir(str(Path(testbed.__file__).parent), quiet=1)


def _parse_args(argv: list[str] | None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per cell (default 3)")
    parser.add_argument("--big-runs", type=int, default=1,
                        help="runs for N >= 1000 (default 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--no-mininet", action="store_true", help="skip Mininet")
    parser.add_argument("--vs-floor", action="store_true",
                        help="testbed (CLI, API) against the ip -batch floor for 100 and 1000 "
                             "routers, 5 interleaved runs each, no Mininet (the other options "
                             "still override)")
    parser.add_argument("--mininet-timeout", type=float, default=300.0,
                        help="seconds per Mininet run before it is killed (default 300)")
    parser.add_argument("--testbed", default=str(Path(sys.executable).with_name("testbed")),
                        help="the testbed executable (default: next to this Python)")
    parser.add_argument("--json", metavar="FILE", help="also write the samples as JSON")
    parser.add_argument("--prefix", default="tbb",
                        help="start of every instance and namespace name made (default tbb: "
                             "instances tbb<pid>c<run>, floor namespaces tbbench-<pid>-...)")
    preset = argparse.ArgumentParser(add_help=False)
    preset.add_argument("--vs-floor", action="store_true")
    if preset.parse_known_args(argv)[0].vs_floor:
        parser.set_defaults(no_mininet=True, **VS_FLOOR)
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    return args, scenarios


def _run_order(scenarios: list[str], tools: list[str], args) -> list[tuple[str, str, int]]:
    """(scenario, tool, run) in the order to run them.

    The tools of a scenario alternate run by run, so that a change of the
    machine's load hits all of them alike. Mininet last, biggest last: a
    Mininet killed at its time limit leaves the kernel destroying a thousand
    bridges for a while, which slows whatever runs next.
    """
    order = []
    for scenario in scenarios:
        runs = args.big_runs if SCENARIOS[scenario][2] >= 1000 else args.runs
        order += [(scenario, tool, run) for run in range(runs) for tool in tools
                  if not tool.startswith("Mininet")]
    for scenario in sorted(scenarios, key=lambda s: SCENARIOS[s][2]):
        runs = args.big_runs if SCENARIOS[scenario][2] >= 1000 else args.runs
        order += [(scenario, tool, run) for tool in tools if tool.startswith("Mininet")
                  for run in range(runs)]
    return order


def _bench(scenario: str, tool: str, run: int, args) -> Sample:
    if tool == "testbed CLI":
        return bench_testbed_cli(scenario, run, args.testbed, args.prefix)
    if tool == "testbed API":
        return bench_testbed_api(scenario, run, sys.executable, args.prefix)
    if tool == "floor":
        return bench_floor(scenario, run, args.prefix)
    if tool == "Mininet API":
        return bench_mininet_api(scenario, args.mininet_timeout)
    return bench_mininet_cli(scenario, args.mininet_timeout)


def main(argv: list[str] | None = None) -> int:
    args, scenarios = _parse_args(argv)
    if os.geteuid() != 0:
        print("bench_topology: needs root (it builds namespaces)", file=sys.stderr)
        return 2
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if args.no_mininet:
        tools = [t for t in tools if not t.startswith("Mininet")]
    if any(t.startswith("Mininet") for t in tools):
        why = mininet_available()
        if why:
            print(f"skipping Mininet: {why}", file=sys.stderr)
            tools = [t for t in tools if not t.startswith("Mininet")]

    byte_compile()
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"({os.cpu_count()} CPUs)", file=sys.stderr)
    cells: dict[tuple[str, str], Cell] = {}
    timed_out: set[tuple[str, str]] = set()
    for scenario, tool, run in _run_order(scenarios, tools, args):
        if (scenario, tool) in timed_out:
            continue          # a second timeout teaches nothing
        cell = cells.setdefault((scenario, tool), Cell(scenario, tool))
        baseline, started_load = _net_namespaces_alive(), os.getloadavg()[0]
        sample = _bench(scenario, tool, run, args)
        sample.load = started_load
        cell.samples.append(sample)
        print(f"{scenario:<10} {tool:<12} run {run + 1} (load {started_load:.2f}): "
              f"up {_fmt(sample.up)} s (CPU {_fmt(sample.cpu)} s), "
              f"down {_fmt(sample.down)} s, RSS {_fmt(sample.rss_mb)} MB"
              + (f"  [{sample.error}]" if sample.error else ""),
              file=sys.stderr, flush=True)
        if sample.error == "timeout":
            timed_out.add((scenario, tool))
        settle(baseline, timeout=30.0)
    end_load = os.getloadavg()
    print(f"load average at end: {end_load[0]:.2f} {end_load[1]:.2f} {end_load[2]:.2f}",
          file=sys.stderr)
    print(render(cells, scenarios))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "load_start": load, "load_end": end_load, "cpus": os.cpu_count(),
            "kernel": os.uname().release,
            "cells": [{"scenario": c.scenario, "tool": c.tool,
                       "up": c.median("up"), "down": c.median("down"),
                       "cpu": c.median("cpu"), "rss_mb": c.median("rss_mb"),
                       "samples": [asdict(s) for s in c.samples]} for c in cells.values()],
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
