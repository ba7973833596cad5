"""The ``netem`` backend: link emulation with the kernel's sch_netem.

Tree per link direction (egress of ``ifname`` in ``netns``)::

    root netem  handle 7462:   delay line: delay, jitter + distribution table,
                               loss (random or gemodel), reorder, duplicate, corrupt;
                               limit sized from BDP so the delay line never drops
      tbf       handle 7463: parent 7462:1   rate + the configured buffer (limit)

so the bottleneck buffer is tbf's, separate from netem's delay line (the
same order as the userspace backend: delay line, then bottleneck).

pyroute2 0.9.7's netem plugin cannot send distribution tables, 64-bit
delays or gemodel loss, so TCA_OPTIONS is built here byte for byte
(``netem_options``, pure and unit-tested) and sent as RTM_NEWQDISC on a
netlink route socket (``rtnl.py``); readback uses pyroute2's ``get_qdiscs``.
The tbf is ``tbf.py``'s, so a change that shrinks its burst also replaces
its queue (see there).
This backend cannot run on our CI kernels (no sch_netem); it is exercised
in the QEMU guest.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from testbed.emulation import aqm as aqm_mod
from testbed.emulation import tbf as tbf_mod
from testbed.kernel.tc import CREATE_OR_REPLACE, nla as _nla, qdisc_message, send
from testbed.kernel.netns import enter
from testbed.emulation.common import (Step, Target, applied_with, read_state, state_path,
                                      write_state)
from testbed.emulation.distributions import netem_table
from testbed.kernel.red import RedParams
from testbed.errors import RealizeError
from testbed.model.impairment import GilbertElliott, Impairment
from testbed.units import Duration

NETEM_HANDLE = 0x7462 << 16
TBF_HANDLE = 0x7463 << 16
TC_H_ROOT = 0xFFFFFFFF

TCA_NETEM_CORR = 1
TCA_NETEM_DELAY_DIST = 2
TCA_NETEM_REORDER = 3
TCA_NETEM_CORRUPT = 4
TCA_NETEM_LOSS = 5
TCA_NETEM_LATENCY64 = 10
TCA_NETEM_JITTER64 = 11
NETEM_LOSS_GE = 2
U32_MAX = 2**32 - 1
MIN_LIMIT = 10_000
LINE_RATE_GUESS_BPS = 100e9  # delay line sizing when the link has no rate


def netem_available() -> tuple[bool, str]:
    """Whether the running kernel offers sch_netem, and why we think so (reads files only)."""
    release = os.uname().release
    if Path("/sys/module/sch_netem").exists():
        return True, f"sch_netem is loaded on kernel {release}"
    moddir = Path("/lib/modules") / release
    for name, how in (("modules.builtin", "built in"), ("modules.dep", "available as a module")):
        try:
            text = (moddir / name).read_text()
        except OSError:
            continue
        if "/sch_netem.ko" in text:
            return True, f"sch_netem is {how} on kernel {release}"
    return False, f"sch_netem is not available on kernel {release}"


def prob_u32(fraction: float) -> int:
    return int(round(fraction * U32_MAX))


@dataclass(frozen=True)
class NetemParams:
    """Resolved netem parameters (ns, packets, u32 probabilities)."""

    latency_ns: int
    jitter_ns: int
    limit: int
    loss: int
    duplicate: int
    reorder: int
    corrupt: int
    distribution: str | None
    gemodel: tuple[int, int, int, int] | None  # p, r, h, 1-k as u32 (kernel a1..a4)

    @property
    def gap(self) -> int:
        return 1 if self.reorder else 0

    def describe(self) -> str:
        parts = [f"netem handle 7462: root limit {self.limit} delay {self.latency_ns}ns"]
        if self.jitter_ns:
            parts.append(f"jitter {self.jitter_ns}ns distribution {self.distribution or 'uniform'}")
        if self.gemodel:
            parts.append("loss gemodel p/r/h/1-k u32 " + "/".join(map(str, self.gemodel)))
        for name in ("loss", "reorder", "duplicate", "corrupt"):
            if getattr(self, name):
                parts.append(f"{name} {getattr(self, name) / U32_MAX * 100:g}%")
        return " ".join(parts)


def netem_options(p: NetemParams, tick_per_us: float = 1.0) -> bytes:
    """TCA_OPTIONS payload: struct tc_netem_qopt followed by netem attributes."""
    def ticks(ns: int) -> int:
        return min(U32_MAX, int(ns / 1000 * tick_per_us))

    qopt = struct.pack("=IIIIII", ticks(p.latency_ns), p.limit, p.loss, p.gap, p.duplicate,
                       ticks(p.jitter_ns))
    attrs = _nla(TCA_NETEM_LATENCY64, struct.pack("=q", p.latency_ns))
    attrs += _nla(TCA_NETEM_JITTER64, struct.pack("=q", p.jitter_ns))
    if p.distribution not in (None, "uniform") and p.jitter_ns:
        table = netem_table(p.distribution)
        attrs += _nla(TCA_NETEM_DELAY_DIST, struct.pack(f"={len(table)}h", *table))
    if p.reorder:
        attrs += _nla(TCA_NETEM_REORDER, struct.pack("=II", p.reorder, 0))
    if p.corrupt:
        attrs += _nla(TCA_NETEM_CORRUPT, struct.pack("=II", p.corrupt, 0))
    if p.gemodel:
        attrs += _nla(TCA_NETEM_LOSS, _nla(NETEM_LOSS_GE, struct.pack("=IIII", *p.gemodel)))
    return qopt + attrs


@dataclass(frozen=True)
class NetemPlan:
    netem: NetemParams
    tbf: tbf_mod.TbfParams | None
    aqm: aqm_mod.AqmParams | RedParams | None = None   # tbf's inner queue (a kernel AQM)


def resolve(imp: Impairment, rtt_hint: Duration | None, mtu: int) -> NetemPlan:
    """Pure: netem + tbf parameters for ``imp``."""
    delay_ns = int(imp.delay.seconds * 1e9) if imp.delay else 0
    jitter_ns = int(imp.jitter.seconds * 1e9) if imp.jitter else 0
    horizon = (delay_ns + 4 * jitter_ns) / 1e9 + 0.001
    line = imp.rate.bps if imp.rate else LINE_RATE_GUESS_BPS
    # packets the delay line holds at line rate, with 2x slack; small packets
    # (ACKs) come at most at half the data packet rate
    limit = max(MIN_LIMIT, math.ceil(2 * line / 8 * horizon / (mtu + 14)))
    limit = min(limit, 2**31 - 1)
    ge = imp.loss if isinstance(imp.loss, GilbertElliott) else None
    netem = NetemParams(
        latency_ns=delay_ns, jitter_ns=jitter_ns, limit=limit,
        loss=prob_u32(imp.loss.fraction) if imp.loss is not None and ge is None else 0,
        duplicate=prob_u32(imp.duplicate.fraction) if imp.duplicate else 0,
        reorder=prob_u32(imp.reorder.fraction) if imp.reorder else 0,
        corrupt=prob_u32(imp.corrupt.fraction) if imp.corrupt else 0,
        distribution=imp.distribution,
        gemodel=None if ge is None else (prob_u32(ge.p.fraction), prob_u32(ge.r.fraction),
                                         prob_u32(ge.h.fraction),
                                         prob_u32(1.0 - ge.k.fraction)))
    tbf = aqm = None
    if imp.rate is not None:
        tbf = tbf_mod.tbf_params(imp.rate.bps, imp.bottleneck_bytes(rtt_hint, mtu), mtu)
        aqm = aqm_mod.kernel_params(imp, rtt_hint, mtu, tbf.rate_bytes)
    return NetemPlan(netem=netem, tbf=tbf, aqm=aqm)


def _netem_readback(opts, parent: int) -> dict:
    """The parts of a dumped netem qdisc we check (u32 probabilities, ticks, packets).

    pyroute2 does not parse TCA_NETEM_LATENCY64/JITTER64, so delay and jitter
    come from struct tc_netem_qopt, which the kernel fills in psched ticks.
    """
    from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

    out = {k: opts[k] for k in ("limit", "loss", "duplicate", "gap")}
    out["root"] = parent == TC_H_ROOT
    out["delay_ns"] = int(round(opts["delay"] * 1000 / tick_in_usec))
    out["jitter_ns"] = int(round(opts["jitter"] * 1000 / tick_in_usec))
    reorder = opts.get_attr("TCA_NETEM_REORDER")
    out["reorder"] = reorder["prob_reorder"] if reorder is not None else 0
    corrupt = opts.get_attr("TCA_NETEM_CORRUPT")
    out["corrupt"] = corrupt["prob_corrupt"] if corrupt is not None else 0
    return out


def readback_differences(planned: NetemParams, got: dict | None,
                         tick_per_us: float) -> list[str]:
    """Pure: where the netem the kernel reports differs from the plan (empty: none)."""
    if got is None:
        return ["no netem qdisc with handle 7462: on the interface"]
    problems = []
    if not got.get("root", True):
        problems.append("netem is not the root qdisc")
    for key in ("limit", "loss", "duplicate", "gap", "reorder", "corrupt"):
        if got.get(key) != getattr(planned, key):
            problems.append(f"{key} {got.get(key)} != {getattr(planned, key)}")
    tick_ns = 1000 / tick_per_us
    for key, want in (("delay_ns", planned.latency_ns), ("jitter_ns", planned.jitter_ns)):
        # the qopt field is in ticks (64 ns here); saturates at 2^32 ticks
        if want < U32_MAX * tick_ns and abs(got.get(key, -1) - want) > tick_ns:
            problems.append(f"{key} {got.get(key)} != {want}")
    return problems


class NetemBackend:
    """Link emulation with the kernel's netem (delay line) and tbf (bottleneck)."""

    name = "netem"

    def unsupported(self, imp: Impairment) -> list[str]:
        problems = []
        if imp.queue is not None and imp.rate is None:
            problems.append("queue without rate: give the link a rate for its bottleneck buffer")
        if imp.reorder is not None and imp.reorder.fraction > 0 and imp.delay is None:
            # netem sends "reordered" packets at once, so without a delay there is
            # nothing to overtake and the setting would be silently ignored
            problems.append("reorder without delay: netem reorders by letting packets skip "
                            "the delay; give the link a delay")
        if imp.rate is not None and imp.rate.bps / 8 > tbf_mod.MAX_RATE_BYTES:
            problems.append(f"rate {imp.rate}: above what tbf without 64-bit rates expresses")
        return problems

    def plan(self, netns: str, ifname: str, imp: Impairment, rtt_hint: Duration | None,
             mtu: int) -> list[Step]:
        p = resolve(imp, rtt_hint, mtu)
        steps = [Step(netns, ifname, "netem", p.netem.describe())]
        if p.tbf is not None:
            steps.append(Step(netns, ifname, "tbf", p.tbf.describe().replace(
                "handle 7462: root", "handle 7463: parent 7462:1")))
        if p.aqm is not None:
            steps.append(Step(netns, ifname, "aqm", p.aqm.describe(TBF_HANDLE | 1)
                              + " (the buffer is its limit)"))
        return steps

    def apply(self, netns: str, ifname: str, imp: Impairment, *, owner_tag: str,
              state_dir: str | Path, rtt_hint: Duration | None = None, mtu: int = 1500) -> None:
        self._refuse_unsupported(imp)
        plan = resolve(imp, rtt_hint, mtu)
        self._install(netns, ifname, plan)
        write_state(state_path(state_dir, netns, ifname),
                    {"backend": self.name, "owner": owner_tag, "mtu": mtu,
                     "rtt_hint": None if rtt_hint is None else rtt_hint.seconds,
                     "impairment": imp.as_fields(), "notes": []})

    def apply_all(self, targets: list[Target], *, state_dir: str | Path) -> list[str]:
        """``apply`` for each direction (``up``); nothing to share between them here."""
        for t in targets:
            self.apply(t.netns, t.ifname, t.imp, owner_tag=t.owner_tag, state_dir=state_dir,
                       rtt_hint=t.rtt_hint, mtu=t.mtu)
        return []

    def change(self, netns: str, ifname: str, imp: Impairment, *, owner_tag: str,
               state_dir: str | Path, exact: bool = False, rtt_shift: float = 0.0) -> Impairment:
        """Merge ``imp`` (``exact``: replace with it); ``rtt_shift`` as in the userspace backend.

        netem and tbf are changed in place (qdisc replace with the same handle);
        a queue dropped because the burst shrank is listed in the record's ``notes``.
        """
        now = applied_with(state_dir, netns, ifname, imp, exact=exact, rtt_shift=rtt_shift)
        self._refuse_unsupported(now.merged)
        previous = resolve(now.before, now.before_rtt, now.mtu)
        flushed = self._install(netns, ifname, resolve(now.merged, now.rtt_hint, now.mtu),
                                previous_tbf=previous.tbf,
                                previous_aqm=None if previous.aqm is None else previous.aqm.kind)
        now.record.update(impairment=now.merged.as_fields(),
                          rtt_hint=None if now.rtt_hint is None else now.rtt_hint.seconds,
                          notes=[] if flushed is None else [flushed.describe()])
        write_state(now.path, now.record)
        return now.merged

    def remove(self, netns: str, ifname: str, *, owner_tag: str, state_dir: str | Path) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        if Path(f"/run/netns/{netns}").exists():
            with enter(netns), IPRoute() as ipr:
                found = ipr.link_lookup(ifname=ifname)
                if found and any(q["handle"] == NETEM_HANDLE and q["parent"] == TC_H_ROOT
                                 for q in ipr.get_qdiscs(index=found[0])):
                    try:
                        ipr.tc("del", index=found[0], handle=NETEM_HANDLE, root=True)
                    except NetlinkError as exc:
                        if exc.code != 2:
                            raise RealizeError(f"removing netem on {netns}/{ifname}: {exc}") from None
        state_path(state_dir, netns, ifname).unlink(missing_ok=True)

    def check_alive(self, netns: str, ifname: str, *, owner_tag: str,
                    state_dir: str | Path) -> None:
        """Nothing runs in user space with netem."""

    def show(self, netns: str, ifname: str, *, owner_tag: str, state_dir: str | Path) -> dict:
        record = read_state(state_path(state_dir, netns, ifname)) or {}
        return {"backend": self.name, "impairment": record.get("impairment"),
                "qdiscs": self._read(netns, ifname)}

    # -- internals --------------------------------------------------------
    def _refuse_unsupported(self, imp: Impairment) -> None:
        problems = self.unsupported(imp)
        if problems:
            raise RealizeError(f"the netem link emulation backend cannot do: {'; '.join(problems)}")

    def _install(self, netns: str, ifname: str, plan: NetemPlan,
                 previous_tbf: tbf_mod.TbfParams | None = None,
                 previous_aqm: str | None = None) -> tbf_mod.Flushed | None:
        """Create or change netem and its tbf; what the tbf's queue lost if it was replaced."""
        from pyroute2 import IPRoute

        with enter(netns), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise RealizeError(f"interface {ifname!r} not found in namespace {netns!r}")
        from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec
        send(netns, qdisc_message(found[0], "netem", NETEM_HANDLE, TC_H_ROOT,
                                  netem_options(plan.netem, tick_in_usec), CREATE_OR_REPLACE),
             "netem qdisc", hint="; does the kernel have sch_netem? (modprobe sch_netem)")
        flushed = None
        if plan.tbf is not None:
            flushed = tbf_mod.apply(netns, ifname, plan.tbf, previous=previous_tbf,
                                    handle=TBF_HANDLE, parent=NETEM_HANDLE | 1)
        else:  # a change that takes the rate away: netem's change keeps its child
            tbf_mod.remove(netns, ifname, handle=TBF_HANDLE, parent=NETEM_HANDLE | 1)
        self._install_aqm(netns, ifname, found[0], plan, previous_aqm)
        got = self._read(netns, ifname)
        netem = got.get("netem")
        differs = readback_differences(plan.netem, netem, tick_in_usec)
        if differs:
            raise RealizeError(f"netem on {netns}/{ifname} reads back as {netem}, planned "
                               f"{plan.netem.describe()} ({'; '.join(differs)})")
        if (got.get("aqm") or {}).get("kind") != (plan.aqm.kind if plan.aqm else None):
            raise RealizeError(f"the queue under tbf on {netns}/{ifname} reads back as "
                               f"{got.get('aqm')}, planned {plan.aqm}")
        want_rate = None if plan.tbf is None else plan.tbf.rate_bytes
        if (got.get("tbf") or {}).get("rate_bytes") != want_rate:
            raise RealizeError(f"tbf under netem on {netns}/{ifname} reads back as "
                               f"{got.get('tbf')}, planned "
                               f"{'none' if plan.tbf is None else plan.tbf.describe()}")
        return flushed

    def _install_aqm(self, netns: str, ifname: str, index: int, plan: NetemPlan,
                     previous: str | None) -> None:
        """tbf's inner queue: the AQM, or a fresh bfifo again (an AQM taken away, or one
        of another kind coming: ``aqm.needs_fresh_queue``). ``previous``: the kind before."""
        if plan.tbf is not None and aqm_mod.needs_fresh_queue(
                previous, None if plan.aqm is None else plan.aqm.kind):
            tbf_mod.fresh_queue(netns, ifname, index, TBF_HANDLE, NETEM_HANDLE | 1,
                                plan.tbf.limit)
        if plan.aqm is not None:
            aqm_mod.install(netns, index, plan.aqm, TBF_HANDLE)

    def _read(self, netns: str, ifname: str) -> dict:
        from pyroute2 import IPRoute

        out: dict = {}
        with enter(netns), IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return out
            for q in ipr.get_qdiscs(index=found[0]):
                opts = q.get_attr("TCA_OPTIONS")
                if q.get_attr("TCA_KIND") == "netem" and q["handle"] == NETEM_HANDLE:
                    out["netem"] = _netem_readback(opts, q["parent"])
                if q["handle"] == aqm_mod.AQM_HANDLE and q["parent"] == TBF_HANDLE | 1:
                    out["aqm"] = {"kind": q.get_attr("TCA_KIND")}
                if q.get_attr("TCA_KIND") == "tbf" and q["handle"] == TBF_HANDLE:
                    parms = opts.get_attr("TCA_TBF_PARMS")
                    out["tbf"] = {"rate_bytes": parms["rate"], "limit": parms["limit"]}
        return out
