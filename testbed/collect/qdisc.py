"""qdisc statistics of the emulated links over time (backlog, drops,
overlimits), read through netlink in each router's namespace, plus the full
qdisc trees (``tc -s -j qdisc show``) for the manifest."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from pyroute2 import IPRoute

from testbed.collect.damage import sampler_losses
from testbed.results import QDISC_COLUMNS

CSV_COLUMNS = QDISC_COLUMNS


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
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
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
                for node, ipr, names in handles:
                    for row in read_qdiscs(ipr, names):
                        self.rows.append({"t": t, "node": node, **row})
        except BaseException as exc:
            self.error = exc
        finally:
            for _, ipr, _ in handles:
                ipr.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)

    def losses(self) -> list[str]:
        """What the run lost of this collector (it stopped on an error), for its record."""
        return sampler_losses("qdisc", self.error, self.rows)


def qdisc_tree(run: Callable[[list[str]], str]) -> Any:
    """``tc -s -j qdisc show`` through ``run`` (a node's run, returning stdout), parsed."""
    text = run(["tc", "-s", "-j", "qdisc", "show"])
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
