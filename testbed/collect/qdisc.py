"""qdisc statistics of the emulated links over time (backlog, drops,
overlimits), read through netlink in each router's namespace, plus the full
qdisc trees (``tc -s -j qdisc show``) for the manifest.

Where the link engine is a direction's bottleneck queue (userspace backend,
an aqm), its queue is sampled on the same grid: each round asks the engine
for its queues first (``EngineQueues.ask``), reads the kernel's qdiscs
meanwhile and then takes the engine's answer, written as rows of kind
``engine:<aqm>`` (``results.QDISC_COLUMNS``). A round the engine did not
answer in time is counted (``engine_lost``), and the run says so."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Mapping, Protocol

from pyroute2 import IPRoute

from testbed.collect.damage import sampler_losses
from testbed.results import ENGINE_QUEUE_KIND, QDISC_COLUMNS

CSV_COLUMNS = QDISC_COLUMNS


class EngineQueues(Protocol):
    """The link engine's queues on request: ``ask`` asks, ``answer`` waits until
    ``deadline`` (monotonic s) for the answer to the last ask (None: none came). ``error``:
    why it cannot ask at all (None: it can); ``close`` when done."""

    error: str | None

    def ask(self) -> None: ...

    def answer(self, deadline: float) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


def engine_rows(t: float, queues: Mapping[str, Mapping[str, Any]],
                places: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """qdisc.csv rows of the engine's bottleneck queues (its answer's ``queues``: by lane
    key, each its aqm and counters), each at ``places[lane key]`` = (sender node, interface)."""
    rows = []
    for key, queue in sorted(queues.items()):
        if key not in places:
            continue
        node, ifname = places[key]
        rows.append({
            "t": t, "node": node, "ifname": ifname,
            "kind": ENGINE_QUEUE_KIND + str(queue.get("aqm")), "handle": "",
            "parent": "", "bytes": queue.get("sent_bytes"), "packets": queue.get("sent"),
            "drops": queue.get("tail_drops", 0) + queue.get("aqm_drops", 0),
            "overlimits": None, "requeues": None, "backlog": queue.get("backlog_bytes"),
            "qlen": queue.get("qlen"), "marks": queue.get("marks"),
            "aqm_drops": queue.get("aqm_drops"), "sojourn_ms": queue.get("sojourn_ms_now")})
    return rows


def read_qdiscs(ipr: IPRoute, ifnames: dict[int, str]) -> list[dict[str, Any]]:
    """Stats of every qdisc on the interfaces in ``ifnames`` (index -> name)."""
    out = []
    for msg in ipr.get_qdiscs():
        idx = msg["index"]
        if idx not in ifnames:
            continue
        stats2 = msg.get_attr("TCA_STATS2")
        basic = stats2.get_attr("TCA_STATS_BASIC") if stats2 else None
        queue = stats2.get_attr("TCA_STATS_QUEUE") if stats2 else None
        stats = msg.get_attr("TCA_STATS") or {}
        out.append({
            "ifname": ifnames[idx], "kind": msg.get_attr("TCA_KIND"),
            "handle": f"{msg['handle'] >> 16:x}:", "parent": f"{msg['parent'] >> 16:x}:{msg['parent'] & 0xFFFF:x}",
            "bytes": (basic or stats).get("bytes"), "packets": (basic or stats).get("packets"),
            "drops": (queue or stats).get("drops"), "overlimits": (queue or stats).get("overlimits"),
            "requeues": (queue or {}).get("requeues"), "backlog": (queue or stats).get("backlog"),
            "qlen": (queue or stats).get("qlen"),
        })
    return out


@dataclass
class QdiscSampler:
    """Every ``interval`` seconds, the qdisc stats of the given nodes' interfaces.

    ``targets`` maps a node name to a context manager factory that enters its
    namespace (``Node.enter``) and the interface names to watch there.
    """

    targets: list[tuple[str, Callable[[], ContextManager[None]], list[str]]]
    interval: float = 0.1
    engine: EngineQueues | None = None
    engine_places: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    engine_asked: int = 0
    engine_lost: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, t0: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(t0,), name="qdisc", daemon=True)
        self._thread.start()

    def _run(self, t0: float) -> None:
        handles = []
        try:
            for node, enter, names in self.targets:
                with enter():
                    ipr = IPRoute()
                idx = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
                handles.append((node, ipr, {i: n for i, n in idx.items() if n in names}))
            while not self._stop.wait(self.interval):
                t = round(time.monotonic() - t0, 4)
                if self.engine is not None:
                    self.engine.ask()
                for node, ipr, names in handles:
                    for row in read_qdiscs(ipr, names):
                        self.rows.append({"t": t, "node": node, **row})
                if self.engine is not None:
                    self._engine_sample(t, t0)
        except BaseException as exc:
            self.error = exc
        finally:
            for _, ipr, _ in handles:
                ipr.close()
            if self.engine is not None:
                self.engine.close()

    def _engine_sample(self, t: float, t0: float) -> None:
        """The engine's queues at ``t``, if it answers before the next round is due."""
        assert self.engine is not None
        self.engine_asked += 1
        answer = self.engine.answer(t0 + t + self.answer_timeout)
        if answer is None:
            self.engine_lost += 1
            return
        self.rows += engine_rows(t, answer.get("queues") or {}, self.engine_places)

    @property
    def answer_timeout(self) -> float:
        """How long a round waits for the engine: most of an interval."""
        return 0.8 * self.interval

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)

    def losses(self) -> list[str]:
        """What the run lost of this collector (it stopped on an error), for its record."""
        return sampler_losses("qdisc", self.error, self.rows)

    def engine_stats(self) -> dict[str, Any] | None:
        """How many samples of the engine's queues were asked for and how many it did not
        answer in time (result.json's summary); None when the engine was not sampled."""
        if self.engine is None:
            return None
        return {"samples": self.engine_asked, "lost": self.engine_lost,
                "timeout_ms": round(self.answer_timeout * 1e3, 3), "error": self.engine.error}


def qdisc_tree(run: Callable[[list[str]], str]) -> Any:
    """``tc -s -j qdisc show`` through ``run`` (a node's run, returning stdout), parsed."""
    text = run(["tc", "-s", "-j", "qdisc", "show"])
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
