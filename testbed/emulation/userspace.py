"""The ``userspace`` backend: link emulation without sch_netem.

Per direction of a link (egress of ``ifname`` inside ``netns``):

- rate + buffer: a root tbf (``tbf.py``), buffer from ``Impairment.bottleneck_bytes``
  (default 1 BDP at the RTT hint);
- delay, jitter (uniform/normal/pareto/paretonormal, netem semantics),
  reorder (netem's: that share of packets skips the delay line), random
  and Gilbert-Elliott loss: a lane of the testbed's one link engine
  (``engine.py``, run by ``enginectl.py``) fed by an iptables NFQUEUE rule
  without bypass (why loss is not an nft rule: see ``netfilter.py``);
- offloads (TSO/GSO/GRO) off on the interface when loss, jitter or
  reordering must act per MTU-sized packet (``offload.py``).

Order on the way out: NFQUEUE delay line (loss decided on arrival) -> tbf. The delay line thus sits before the bottleneck queue;
for one link the end-to-end delay and queueing behaviour are the same.
Traffic from a host to a router is delayed at the router's ingress
instead (``ingress=`` in ``apply``: the router's PREROUTING, queue number =
the sender interface's ifindex): held in the host's own egress, a packet
stays charged to its TCP socket, and TCP Small Queues then allow only about
a millisecond of data in flight below TCP (measured: 4.8 Mbit/s instead of
1.4 Gbit/s through 10 ms). Once a packet has crossed the veth it no longer
counts against the socket. The rate limiter stays at the sender's egress.
Not at a receiving *host*'s ingress: the kernel timestamps packets before
PREROUTING, so ping (SO_TIMESTAMP) would not show the delay there; on a
host-host link the delay line stays on the sender's egress, with the TSQ
limit above.

With an ``aqm`` other than fifo (codel, fq_codel, red, pie) the link engine
itself is the bottleneck (``bottleneck.py``, ``pie.py``, ``fqcodel.py``: rate,
buffer, the discipline, ECN CE marks with ``ecn: true``) and there is no tbf;
offloads go off on the interface.

Cannot do: duplicate, corrupt, a queue without a rate; these are reported by
``unsupported`` and refused by ``apply``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from testbed.emulation import enginectl, netfilter, offload, tbf
from testbed.kernel.netns import enter
from testbed.emulation.common import (Step, Target, applied_with, read_state, state_path,
                                      write_state)
from testbed.emulation.delayline import DelayConfig
from testbed.emulation.engine import lane_key
from testbed.emulation.fqcodel import FLOWS as FQ_FLOWS, QUANTUM as FQ_QUANTUM
from testbed.errors import RealizeError
from testbed.model.impairment import Aqm, GilbertElliott, Impairment
from testbed.plan.deployed import EmulatedDirection
from testbed.units import Duration


@dataclass(frozen=True)
class UserspacePlan:
    """Resolved parameters of every mechanism the impairment needs (None: not used)."""

    tbf: tbf.TbfParams | None = None
    delay: DelayConfig | None = None
    offloads_off: bool = False

    def to_dict(self) -> dict:
        return {"tbf": None if self.tbf is None else vars(self.tbf),
                "delay": None if self.delay is None else self.delay.to_dict(),
                "offloads_off": self.offloads_off}

    @classmethod
    def from_dict(cls, data: dict) -> "UserspacePlan":
        return cls(tbf=None if data["tbf"] is None else tbf.TbfParams(**data["tbf"]),
                   delay=None if data["delay"] is None else DelayConfig.from_dict(data["delay"]),
                   offloads_off=data["offloads_off"])


EMPTY = UserspacePlan()


ENGINE_AQMS = ("codel", "fq_codel", "red", "pie")   # the link engine's bottleneck has these


def resolve(imp: Impairment, rtt_hint: Duration | None, mtu: int) -> UserspacePlan:
    """Pure: the mechanisms and their parameters for ``imp`` (assumes it is supported).

    With an aqm other than fifo the link engine is the bottleneck (rate, buffer, AQM)
    and there is no tbf; the buffer is the aqm's ``limit`` (packets) when given, else
    the link's queue."""
    aqm = imp.aqm.resolved() if imp.aqm is not None and imp.aqm.kind != "fifo" else None
    tbf_params = None
    if imp.rate is not None and aqm is None:
        tbf_params = tbf.tbf_params(imp.rate.bps, imp.bottleneck_bytes(rtt_hint, mtu), mtu)
    delay = None
    ge = imp.loss if isinstance(imp.loss, GilbertElliott) else None
    loss = imp.loss.fraction if imp.loss is not None and ge is None else 0.0
    if imp.delay is not None or imp.jitter is not None or imp.reorder is not None or ge or loss \
            or aqm is not None:
        delay = DelayConfig(
            delay_us=imp.delay.us if imp.delay else 0.0,
            jitter_us=imp.jitter.us if imp.jitter else 0.0,
            distribution=imp.distribution,
            reorder=imp.reorder.fraction if imp.reorder else 0.0, loss=loss,
            ge_p=ge.p.fraction if ge else None, ge_r=ge.r.fraction if ge else None,
            ge_h=ge.h.fraction if ge else 0.0, ge_k=ge.k.fraction if ge else 1.0,
            **_engine_bottleneck(imp, aqm, rtt_hint, mtu))
    return UserspacePlan(tbf=tbf_params, delay=delay,
                         offloads_off=imp.acts_per_packet or aqm is not None)


def _engine_bottleneck(imp: Impairment, aqm: Aqm | None, rtt_hint: Duration | None,
                       mtu: int) -> dict:
    if aqm is None or imp.rate is None:
        return {}
    return {"aqm": aqm.kind, "rate_bps": imp.rate.bps,
            "limit_bytes": imp.aqm_buffer_bytes(rtt_hint, mtu),
            "target_us": aqm.target.us if aqm.target else 5000.0,
            "interval_us": aqm.interval.us if aqm.interval else 100000.0,
            "ecn": bool(imp.ecn), "limit_packets": imp.aqm.limit or 0}


def describe_bottleneck(d: DelayConfig) -> str:
    """The engine's bottleneck as the plan shows it."""
    text = f"rate {d.rate_bps / 1e6:g} Mbit/s, buffer {d.limit_bytes} B, {d.aqm}"
    if d.aqm == "fq_codel":
        text += f" ({FQ_FLOWS} flows, quantum {FQ_QUANTUM})"
    if d.aqm != "red":
        text += (f" target {d.target_us:g}us {'tupdate' if d.aqm == 'pie' else 'interval'} "
                 f"{d.interval_us:g}us")
    if d.limit_packets:
        text += f" limit {d.limit_packets}p"
    return text + (", ECN marks CE" if d.ecn else "") + " (no tbf)"


def plan_steps(netns: str, ifname: str, plan: UserspacePlan,
               ingress: tuple[str, str] | None = None) -> list[Step]:
    """What ``apply`` will do; ``ingress``: the delay line (and an AQM) at the receiving
    router's ingress instead of the sender's egress (module doc), as ``apply`` puts it."""
    line_ns, line_if = ingress or (netns, ifname)
    hook = f"PREROUTING -i {line_if}" if ingress else f"POSTROUTING -o {line_if}"
    steps = []
    if plan.offloads_off:
        steps.append(Step(netns, ifname, "offloads", "ethtool -K tso off gso off gro off"))
    if plan.tbf is not None:
        steps.append(Step(netns, ifname, "tbf", plan.tbf.describe()))
    if plan.delay is not None:
        d = plan.delay
        detail = (f"delay {Duration(d.delay_us / 1e6)} jitter {Duration(d.jitter_us / 1e6)} "
                  f"{d.distribution or 'uniform'}")
        if d.loss:
            detail += f" loss {d.loss * 100:g}%"
        if d.reorder:
            detail += f" reorder {d.reorder * 100:g}%"
        if d.ge_p is not None:
            detail += f" gemodel p={d.ge_p:g} r={d.ge_r:g} h={d.ge_h:g} k={d.ge_k:g}"
        if d.aqm is not None:
            steps.append(Step(line_ns, line_if, "bottleneck in the link engine",
                              describe_bottleneck(d)))
        steps.append(Step(line_ns, line_if, "link engine",
                          f"a lane of the testbed's link engine on NFQUEUE <ifindex>: {detail}"))
        steps.append(Step(line_ns, line_if, "iptables",
                          f"mangle {hook} -j NFQUEUE (no bypass), v4 and v6"))
    return steps


def _ifindex(netns: str, ifname: str) -> int:
    from pyroute2 import IPRoute      # 0.15-0.35 s to import: only when a link needs it
    with enter(netns), IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise RealizeError(f"interface {ifname!r} not found in namespace {netns!r}")
    return found[0]


def _delay_site(record: dict, netns: str, ifname: str) -> tuple[str, str, str, int]:
    """Where the direction's delay line runs: (netns, ifname, hook, queue number).

    The queue number is the sender interface's ifindex either way: unique in
    the receiver's namespace too, since ifindexes are planned per link end.
    """
    lane = record.get("engine")
    at = record.get("delay_at")
    queue = lane["queue"] if lane is not None else _ifindex(netns, ifname)
    if at is None:
        return netns, ifname, "egress", queue
    return at["netns"], at["ifname"], at["hook"], queue


def lane_places(state_dir: str | Path, emulated: Iterable[EmulatedDirection]
                ) -> dict[str, tuple[str, str]]:
    """Each engine lane (its key in the engine's files) -> the direction it serves, as
    (sender node, sender interface): where tbf, the bottleneck it replaces, would be."""
    out = {}
    for e in emulated:
        lane = (read_state(state_path(state_dir, e.netns, e.ifname)) or {}).get("engine")
        if lane is not None:
            out[lane_key(lane["netns"], lane["queue"])] = (e.sender, e.ifname)
    return out


def engine_has_queues(state_dir: str | Path) -> bool:
    """Whether the testbed's link engine is the bottleneck queue of some direction."""
    _, lanes = enginectl.read_lanes(enginectl.EngineFiles.of(state_dir))
    return any(config.aqm is not None for config in lanes.values())


class UserspaceBackend:
    """Link emulation with tbf and the testbed's NFQUEUE link engine."""

    name = "userspace"

    def __init__(self, realtime_prio: int = 10, seed: int | None = None) -> None:
        self._realtime_prio = realtime_prio
        self._seed = seed

    # -- pure -----------------------------------------------------------
    def unsupported(self, imp: Impairment) -> list[str]:
        problems = []
        if imp.duplicate is not None and imp.duplicate.fraction > 0:
            problems.append("duplicate: packet duplication needs sch_netem")
        if imp.corrupt is not None and imp.corrupt.fraction > 0:
            problems.append("corrupt: packet corruption needs sch_netem")
        if imp.queue is not None and imp.rate is None:
            problems.append("queue without rate: the only queue here is the rate limiter's; "
                            "give the link a rate")
        if imp.rate is not None and imp.rate.bps / 8 > tbf.MAX_RATE_BYTES:
            problems.append(f"rate {imp.rate}: above {tbf.MAX_RATE_BYTES * 8 / 1e9:.1f}gbit, "
                            "which tbf without 64-bit rates cannot express")
        if imp.reorder is not None and imp.delay is None:
            problems.append("reorder without delay: reordered packets overtake the delay line")
        if imp.aqm is not None and imp.aqm.kind not in ("fifo", *ENGINE_AQMS):
            problems.append(f"aqm {imp.aqm.kind}: the link engine's bottleneck has "
                            f"{', '.join(ENGINE_AQMS)} (and tbf's fifo), not {imp.aqm.kind} yet")
        return problems

    def plan(self, netns: str, ifname: str, imp: Impairment, rtt_hint: Duration | None,
             mtu: int, ingress: tuple[str, str] | None = None) -> list[Step]:
        return plan_steps(netns, ifname, resolve(imp, rtt_hint, mtu), ingress)

    # -- kernel ---------------------------------------------------------
    def apply(self, netns: str, ifname: str, imp: Impairment, *, owner_tag: str,
              state_dir: str | Path, rtt_hint: Duration | None = None, mtu: int = 1500,
              ingress: tuple[str, str] | None = None) -> None:
        """``ingress=(peer_netns, peer_ifname)``: run the delay line at the receiving end
        (for a host's own traffic, see the module docstring)."""
        self._refuse_unsupported(imp)
        path = state_path(state_dir, netns, ifname)
        if read_state(path) is not None:
            self.remove(netns, ifname, owner_tag=owner_tag, state_dir=state_dir)
        record = self._new_record(imp, owner_tag, rtt_hint, mtu, ingress)
        try:
            self._converge(netns, ifname, EMPTY, resolve(imp, rtt_hint, mtu), record, owner_tag,
                           Path(state_dir))
        except BaseException:
            write_state(path, record)
            try:
                self.remove(netns, ifname, owner_tag=owner_tag, state_dir=state_dir)
            except RealizeError:
                pass
            raise
        write_state(path, record)

    def apply_all(self, targets: list[Target], *, state_dir: str | Path) -> list[str]:
        """``apply`` for many directions at once (``up``): one engine update for every
        lane, one ``iptables-restore`` per namespace and family, run side by side.

        A direction that already has a record is re-applied alone. On error every
        direction of ``targets`` is removed again. Returns notes for the user (the
        engine and its timer calibration).
        """
        state_dir = Path(state_dir)
        for t in targets:
            self._refuse_unsupported(t.imp)
        again = [t for t in targets if read_state(state_path(state_dir, t.netns, t.ifname))]
        for t in again:
            self.apply(t.netns, t.ifname, t.imp, owner_tag=t.owner_tag, state_dir=state_dir,
                       rtt_hint=t.rtt_hint, mtu=t.mtu, ingress=t.ingress)
        fresh = [t for t in targets if t not in again]
        records: list[tuple[Path, dict]] = []
        try:
            self._apply_fresh(fresh, state_dir, records)
        except BaseException:
            for path, record in records:   # what was made, so that ``remove`` finds it
                write_state(path, record)
            for t in fresh:
                with contextlib.suppress(RealizeError):
                    self.remove(t.netns, t.ifname, owner_tag=t.owner_tag, state_dir=state_dir)
            raise
        for path, record in records:
            write_state(path, record)
        return enginectl.describe(state_dir)

    def _apply_fresh(self, targets: list[Target], state_dir: Path,
                     records: list[tuple[Path, dict]]) -> None:
        """Rate, buffer and offloads per direction, then every delay lane at once."""
        lanes: dict[tuple[str, int], DelayConfig] = {}
        rules: dict[str, list[tuple[str, str, int, str]]] = {}
        for t in targets:
            record = self._new_record(t.imp, t.owner_tag, t.rtt_hint, t.mtu, t.ingress)
            records.append((state_path(state_dir, t.netns, t.ifname), record))
            plan = resolve(t.imp, t.rtt_hint, t.mtu)
            self._converge(t.netns, t.ifname, EMPTY, replace(plan, delay=None), record,
                           t.owner_tag, state_dir)
            if plan.delay is not None:
                dnetns, difname, hook = t.delay_site
                lanes[(dnetns, t.queue)] = plan.delay
                rules.setdefault(dnetns, []).append((t.owner_tag, difname, t.queue, hook))
                record["engine"] = {"netns": dnetns, "queue": t.queue}
                record["generation"] = 1
                record["plan"] = {**record["plan"], "delay": plan.delay.to_dict()}
        if lanes:
            self._put(state_dir, lanes, targets[0].owner_tag)
            enginectl.check_lanes(state_dir, list(lanes))
            netfilter.apply_queues(rules)

    @staticmethod
    def _new_record(imp: Impairment, owner_tag: str, rtt_hint: Duration | None, mtu: int,
                    ingress: tuple[str, str] | None) -> dict:
        return {"backend": "userspace", "owner": owner_tag, "mtu": mtu,
                "rtt_hint": None if rtt_hint is None else rtt_hint.seconds,
                "impairment": imp.as_fields(), "plan": EMPTY.to_dict(),
                "engine": None, "offloads_before": None, "generation": 0, "notes": [],
                "delay_at": None if ingress is None else
                {"netns": ingress[0], "ifname": ingress[1], "hook": "ingress"}}

    def change(self, netns: str, ifname: str, imp: Impairment, *, owner_tag: str,
               state_dir: str | Path, exact: bool = False, rtt_shift: float = 0.0) -> Impairment:
        """Merge ``imp`` into the applied impairment (tc qdisc change) and return the result.

        ``exact``: put exactly ``imp`` in force instead. ``rtt_shift``: seconds
        the link's round trip changed by (resizes buffers given in BDP).
        In place: the link engine's lane is reconfigured, not restarted, and
        the tbf is changed, not recreated. What the change had to do beyond
        that (a queue dropped, a lane added) is listed in the record's
        ``notes``.
        """
        now = applied_with(state_dir, netns, ifname, imp, exact=exact, rtt_shift=rtt_shift)
        self._refuse_unsupported(now.merged)
        new = resolve(now.merged, now.rtt_hint, now.mtu)
        now.record["notes"] = []
        try:
            self._converge(netns, ifname, UserspacePlan.from_dict(now.record["plan"]), new,
                           now.record, owner_tag, Path(state_dir))
            now.record["impairment"] = now.merged.as_fields()
            now.record["rtt_hint"] = None if now.rtt_hint is None else now.rtt_hint.seconds
        finally:
            write_state(now.path, now.record)
        return now.merged

    def remove(self, netns: str, ifname: str, *, owner_tag: str, state_dir: str | Path) -> None:
        """Undo everything this backend made on the link; safe to repeat."""
        path = state_path(state_dir, netns, ifname)
        record = read_state(path)
        if record is None:
            self._remove_by_name(netns, ifname, owner_tag, Path(state_dir))
        else:
            self._converge(netns, ifname, UserspacePlan.from_dict(record["plan"]), EMPTY, record,
                           owner_tag, Path(state_dir))
        path.unlink(missing_ok=True)

    def check_alive(self, netns: str, ifname: str, *, owner_tag: str,
                    state_dir: str | Path) -> None:
        """Raise RealizeError if the link engine has died or lost this direction's queue."""
        record = read_state(state_path(state_dir, netns, ifname))
        lane = None if record is None else record.get("engine")
        if lane is not None:
            enginectl.check_alive(state_dir, lane["netns"], lane["queue"])

    def show(self, netns: str, ifname: str, *, owner_tag: str, state_dir: str | Path) -> dict:
        """What is in force, read from the kernel (and the link engine's status)."""
        record = read_state(state_path(state_dir, netns, ifname)) or {}
        out: dict = {"backend": self.name, "impairment": record.get("impairment")}
        got_tbf = tbf.read(netns, ifname)
        out["tbf"] = None if got_tbf is None else {"rate_bytes": got_tbf.rate_bytes,
                                                   "limit": got_tbf.limit}
        lane = record.get("engine")
        if lane is not None:
            dnetns, difname, hook, _queue = _delay_site(record, netns, ifname)
            out["delay_line_at"] = {"netns": dnetns, "ifname": difname, "hook": hook}
            out["link_engine"] = enginectl.lane_status(state_dir, lane["netns"], lane["queue"])
        out["offloads"] = offload.read_offloads(netns, ifname)
        return out

    # -- internals --------------------------------------------------------
    def _refuse_unsupported(self, imp: Impairment) -> None:
        problems = self.unsupported(imp)
        if problems:
            raise RealizeError(f"the {self.name} link emulation backend cannot do: "
                               f"{'; '.join(problems)}. Use a kernel with sch_netem "
                               "(backend netem) or drop these settings")

    def _converge(self, netns: str, ifname: str, old: UserspacePlan, new: UserspacePlan,
                  record: dict, owner_tag: str, state_dir: Path) -> None:
        """Move the link from ``old`` to ``new``, updating ``record`` after each step."""
        def done(**changes: object) -> None:
            plan = UserspacePlan.from_dict(record["plan"])
            record["plan"] = UserspacePlan(**{**vars(plan), **changes}).to_dict()

        # offloads first, so no super-packet meets the new rules
        if new.offloads_off and not old.offloads_off:
            record["offloads_before"] = offload.read_offloads(netns, ifname)
            offload.set_offloads(netns, ifname, on=False)
            done(offloads_off=True)
        # delay line: rule removal before the lane goes, the lane before the rule
        self._converge_delay(netns, ifname, old, new, record, owner_tag, state_dir)
        done(delay=new.delay)
        # rate and buffer
        if new.tbf is None and old.tbf is not None:
            tbf.remove(netns, ifname)
            done(tbf=None)
        elif new.tbf is not None and new.tbf != old.tbf:
            flushed = tbf.apply(netns, ifname, new.tbf, previous=old.tbf)
            done(tbf=new.tbf)
            if flushed is not None:
                record.setdefault("notes", []).append(flushed.describe())
        if old.offloads_off and not new.offloads_off:
            before = record.get("offloads_before") or {}
            if before and all(before.values()):
                offload.set_offloads(netns, ifname, on=True)
            record["offloads_before"] = None
            done(offloads_off=False)

    def _converge_delay(self, netns: str, ifname: str, old: UserspacePlan, new: UserspacePlan,
                        record: dict, owner_tag: str, state_dir: Path) -> None:
        lane = record.get("engine")
        if new.delay is None and lane is None:
            return
        dnetns, difname, hook, queue = _delay_site(record, netns, ifname)
        if new.delay is None and lane is not None:
            netfilter.remove_queue(dnetns, owner_tag, difname, queue, hook)
            self._put(state_dir, {(dnetns, queue): None}, owner_tag)
            record["engine"] = None
        elif new.delay is not None and lane is not None and new.delay != old.delay:
            self._put(state_dir, {(dnetns, queue): new.delay}, owner_tag)
            record["generation"] += 1
        elif new.delay is not None and lane is None:
            handle = self._put(state_dir, {(dnetns, queue): new.delay}, owner_tag)
            record["engine"] = {"netns": dnetns, "queue": queue}
            record["generation"] = 1
            enginectl.check_alive(state_dir, dnetns, queue)
            netfilter.apply_queue(dnetns, owner_tag, difname, queue, hook)
            record.setdefault("notes", []).append(
                f"the link engine (pid {handle.pid}) now delays this direction: it had no "
                "delay line")

    def _put(self, state_dir: Path, changes: dict,
             owner_tag: str) -> enginectl.EngineHandle | None:
        return enginectl.put_lanes(state_dir, changes, owner_tag=owner_tag,
                                   realtime_prio=self._realtime_prio, seed=self._seed)

    def _remove_by_name(self, netns: str, ifname: str, owner_tag: str,
                        state_dir: Path) -> None:
        """Cleanup without a state file: exact names derived from owner and interface.

        The lane leaves the engine's file; an engine with no file left to go by
        (its state directory lost) is found by namespace and argv and stopped.
        """
        if not Path(f"/run/netns/{netns}").exists():
            return
        try:
            queue = _ifindex(netns, ifname)
        except RealizeError:
            queue = None
        if queue is not None:
            netfilter.remove_queue(netns, owner_tag, ifname, queue)
            self._put(state_dir, {(netns, queue): None}, owner_tag)
        if enginectl.read_handle(enginectl.EngineFiles.of(state_dir)) is None:
            for pid in enginectl.find_engines([netns], owner_tag):
                started = enginectl.start_time_of(pid)
                if started is not None:
                    enginectl.stop(enginectl.EngineHandle(pid, started, netns))
        if queue is not None:
            tbf.remove(netns, ifname)
