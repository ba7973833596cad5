"""What an emulated link does to packets in one direction.

Pure data: parsed from the YAML mapping of a link (or of one direction of
it) and checked for consistency. Which backend can do what is decided by
``testbed.emulation``, not here.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields, replace
from typing import Any

from testbed.errors import ConfigError
from testbed.units import Duration, Percent, Rate, Size, NUMBER, UnitError, parse_number

ETH_HEADER = 14      # bytes of a frame beyond the MTU, as tc counts them

JITTER_DISTRIBUTIONS = ("uniform", "normal", "pareto", "paretonormal")
# ceilings of the queue's own spellings (the kernel's limits on the resulting
# bytes are checked with the link, ``check_kernel_limits``)
MAX_BDP_MULTIPLE = 1e6
MAX_QUEUE_PACKETS = 2**32 - 1
# a rate without 'queue' gets this many BDPs of buffer; a link without delay is sized
# for DEFAULT_RTT, not for the microseconds of a veth (which would leave 2 packets)
DEFAULT_QUEUE_BDP = 1.0
DEFAULT_RTT = Duration(0.1)


def rtt_or_default(rtt_hint: Duration | None) -> Duration:
    return rtt_hint if rtt_hint is not None else DEFAULT_RTT


def round_trip(*directions: Impairment | None) -> Duration | None:
    """The round trip a link adds: the sum of its directions' delays (None if zero), the
    base of buffers given as a BDP multiple."""
    total = sum(d.delay.seconds for d in directions if d is not None and d.delay)
    return Duration(total) if total > 0 else None


@dataclass(frozen=True)
class GilbertElliott:
    """Two-state loss model (netem's ``loss gemodel p r 1-h 1-k``).

    p: good->bad transition probability, r: bad->good, h: probability a packet
    is delivered in the bad state, k: probability it is delivered in the good
    state (netem's convention; defaults give the Gilbert model).
    """

    p: Percent
    r: Percent
    h: Percent = Percent(0.0)
    k: Percent = Percent(1.0)

    @property
    def mean_loss(self) -> float:
        """Stationary loss probability of the chain."""
        p, r = self.p.fraction, self.r.fraction
        if p + r == 0:
            return 1.0 - self.k.fraction
        pi_bad = p / (p + r)
        return pi_bad * (1.0 - self.h.fraction) + (1.0 - pi_bad) * (1.0 - self.k.fraction)


def _packets(n: int) -> int:
    if n <= 0:
        raise UnitError("a queue must hold at least one packet")
    if n > MAX_QUEUE_PACKETS:
        raise UnitError(f"a queue must hold at most {MAX_QUEUE_PACKETS} packets")
    return n


def _bdp_multiple(number: str, value: object) -> float:
    if not re.fullmatch(NUMBER, number):
        raise UnitError(f"expected a queue size like '100p', '375KB' or '1.5bdp', got {value!r}")
    mult = parse_number(number)
    if not 0 < mult <= MAX_BDP_MULTIPLE:
        raise UnitError(f"a BDP multiple must be positive and at most {MAX_BDP_MULTIPLE:g}")
    return mult


@dataclass(frozen=True)
class Queue:
    """Bottleneck buffer: exactly one of packets, bytes, or a BDP multiple."""

    packets: int | None = None
    bytes: int | None = None
    bdp: float | None = None

    @classmethod
    def parse(cls, value: object) -> "Queue":
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(packets=_packets(value))
        if not isinstance(value, str):
            raise UnitError(f"expected a queue size like '100p', '375KB' or '1.5bdp', got {value!r}")
        text = value.strip().lower()
        if text.endswith("bdp"):
            return cls(bdp=_bdp_multiple(text[:-3].strip(), value))
        if re.fullmatch(r"[0-9]{1,30}p", text):
            return cls(packets=_packets(int(text[:-1])))
        try:
            size = Size.parse(value)
        except UnitError:
            raise UnitError(f"expected a queue size like '100p', '375KB' or '1.5bdp', "
                            f"got {value!r}") from None
        if size.bytes <= 0:
            raise UnitError("a queue must hold at least one byte")
        return cls(bytes=size.bytes)

    def resolve_bytes(self, rate: Rate | None, rtt: Duration, mtu: int) -> int:
        """The buffer in bytes, given the link rate and the path's base RTT."""
        if self.bytes is not None:
            return self.bytes
        if self.packets is not None:
            return self.packets * (mtu + 14)
        assert self.bdp is not None
        if rate is None:
            raise UnitError("a queue given as a BDP multiple needs a rate on the link")
        bdp = rate.bps / 8.0 * max(rtt.seconds, 0.001)
        return max(int(self.bdp * bdp), 2 * (mtu + 14))

    def __str__(self) -> str:
        if self.packets is not None:
            return f"{self.packets}p"
        if self.bytes is not None:
            return str(Size(self.bytes))
        return f"{self.bdp:g}bdp"


# the bottleneck queue's discipline; parameters left out take the kernel's defaults
# (tc-codel(8), tc-fq_codel(8), tc-pie(8); red's limit is the queue's size)
AQM_KINDS = ("fifo", "codel", "fq_codel", "red", "pie")
AQM_PARAMETERS = {"fifo": (), "codel": ("target", "interval", "limit"),
                  "fq_codel": ("target", "interval", "limit"), "pie": ("target", "interval", "limit"),
                  "red": ("limit",)}
AQM_DEFAULTS: dict[str, dict[str, Any]] = {
    "codel": {"target": Duration(0.005), "interval": Duration(0.1), "limit": 1000},
    "fq_codel": {"target": Duration(0.005), "interval": Duration(0.1), "limit": 10240},
    "pie": {"target": Duration(0.015), "interval": Duration(0.015), "limit": 1000},
}


@dataclass(frozen=True)
class Aqm:
    """The bottleneck queue's discipline: ``kind`` and the parameters given (None: the
    kernel's default, ``resolved``). ``interval`` is PIE's update interval (tupdate)."""

    kind: str
    target: Duration | None = None
    interval: Duration | None = None
    limit: int | None = None            # packets

    def resolved(self) -> "Aqm":
        defaults = AQM_DEFAULTS.get(self.kind, {})
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def as_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.target is not None:
            out["target_s"] = self.target.seconds
        if self.interval is not None:
            out["interval_s"] = self.interval.seconds
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> "Aqm":
        unknown = set(data) - {"kind", "target_s", "interval_s", "limit"}
        if unknown or data.get("kind") not in AQM_KINDS:
            raise ValueError(f"not an AQM record: {data!r}")
        return cls(data["kind"],
                   None if data.get("target_s") is None else Duration(data["target_s"]),
                   None if data.get("interval_s") is None else Duration(data["interval_s"]),
                   data.get("limit"))

    def __str__(self) -> str:
        given = [f"{k} {getattr(self, k)}" for k in ("target", "interval", "limit")
                 if getattr(self, k) is not None]
        return self.kind + (f" ({', '.join(given)})" if given else "")


@dataclass(frozen=True)
class Impairment:
    """Impairments applied to one direction of a link (at the sender's egress)."""

    rate: Rate | None = None
    delay: Duration | None = None
    jitter: Duration | None = None
    distribution: str | None = None
    loss: Percent | GilbertElliott | None = None
    queue: Queue | None = None
    reorder: Percent | None = None
    duplicate: Percent | None = None
    corrupt: Percent | None = None
    aqm: Aqm | None = None
    ecn: bool | None = None             # the AQM marks ECT packets CE instead of dropping

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def acts_per_packet(self) -> bool:
        """Whether some impairment acts on single packets (loss, jitter, reorder, duplicate,
        corrupt, an AQM's drops and marks): then GSO super-packets must not exist (an AQM
        would drop or mark ~40 segments at once, where a real bottleneck sees packets of
        its MTU). 0 % or a zero jitter does not."""
        if self.aqm is not None and self.aqm.kind != "fifo":
            return True
        for name in ("loss", "jitter", "reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if value is None:
                continue
            amount = getattr(value, "fraction", getattr(value, "seconds", None))
            if amount is None or amount > 0:      # Gilbert-Elliott loss has no single amount
                return True
        return False

    def bottleneck_bytes(self, rtt_hint: Duration | None, mtu: int) -> int | None:
        """The bottleneck buffer in bytes (None without a rate): the queue, else
        ``DEFAULT_QUEUE_BDP`` BDPs over the round trip ``rtt_hint`` (``rtt_or_default``)."""
        if self.rate is None:
            return None
        queue = self.queue or Queue(bdp=DEFAULT_QUEUE_BDP)
        return queue.resolve_bytes(self.rate, rtt_or_default(rtt_hint), mtu)

    def aqm_buffer_bytes(self, rtt_hint: Duration | None, mtu: int) -> int | None:
        """The buffer an AQM manages: its own ``limit`` packets (of mtu + the Ethernet
        header) when given, else the link's bottleneck buffer (None without a rate)."""
        if self.aqm is not None and self.aqm.limit is not None:
            return self.aqm.limit * (mtu + ETH_HEADER)
        return self.bottleneck_bytes(rtt_hint, mtu)

    def merged(self, other: "Impairment") -> "Impairment":
        """``self`` with every field that ``other`` sets replaced (like ``tc qdisc change``)."""
        changes = {f.name: getattr(other, f.name) for f in fields(other)
                   if getattr(other, f.name) is not None}
        return replace(self, **changes)

    def as_fields(self) -> dict[str, Any]:
        """For scripts: numbers in base units (bit/s, s, fractions), keys only when set."""
        out: dict[str, Any] = {}
        if self.rate is not None:
            out["rate_bps"] = self.rate.bps
        if self.delay is not None:
            out["delay_s"] = self.delay.seconds
        if self.jitter is not None:
            out["jitter_s"] = self.jitter.seconds
        if self.distribution is not None:
            out["distribution"] = self.distribution
        if isinstance(self.loss, GilbertElliott):
            out["loss_gilbert_elliott"] = {k: getattr(self.loss, k).fraction for k in "prhk"}
        elif self.loss is not None:
            out["loss"] = self.loss.fraction
        if self.queue is not None:
            q = self.queue
            out["queue"] = ({"packets": q.packets} if q.packets is not None else
                            {"bytes": q.bytes} if q.bytes is not None else {"bdp": q.bdp})
        for name in ("reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.fraction
        if self.aqm is not None:
            out["aqm"] = self.aqm.as_fields()
        if self.ecn is not None:
            out["ecn"] = self.ecn
        return out

    @classmethod
    def from_fields(cls, data: dict[str, Any]) -> "Impairment":
        """The inverse of ``as_fields``: exact for every impairment. Raises ValueError
        (or KeyError, TypeError) on anything ``as_fields`` does not write."""
        unknown = set(data) - set(FIELD_NAMES)
        if unknown:
            raise ValueError(f"unknown impairment field(s) {', '.join(sorted(unknown))}")
        ge = data.get("loss_gilbert_elliott")
        if ge is not None and set(ge) != set("prhk"):
            raise ValueError(f"a Gilbert-Elliott loss has fields p, r, h, k, not {sorted(ge)}")
        queue = data.get("queue")
        if queue is not None and (len(queue) != 1 or set(queue) - {"packets", "bytes", "bdp"}):
            raise ValueError(f"a queue is one of packets, bytes, bdp, not {queue!r}")

        def maybe(key: str, make: Any) -> Any:
            return None if data.get(key) is None else make(data[key])
        return cls(rate=maybe("rate_bps", Rate), delay=maybe("delay_s", Duration),
                   jitter=maybe("jitter_s", Duration), distribution=data.get("distribution"),
                   loss=(GilbertElliott(**{k: Percent(v) for k, v in ge.items()})
                         if ge is not None else maybe("loss", Percent)),
                   queue=None if queue is None else Queue(**queue),
                   reorder=maybe("reorder", Percent), duplicate=maybe("duplicate", Percent),
                   corrupt=maybe("corrupt", Percent), aqm=maybe("aqm", Aqm.from_fields),
                   ecn=maybe("ecn", bool))

    def describe(self) -> str:
        parts = []
        if self.rate:
            parts.append(f"rate {self.rate}")
        if self.delay:
            d = f"delay {self.delay}"
            if self.jitter:
                d += f" ±{self.jitter}"
                if self.distribution:
                    d += f" {self.distribution}"
            parts.append(d)
        if isinstance(self.loss, GilbertElliott):
            parts.append(f"loss GE(p={self.loss.p},r={self.loss.r},h={self.loss.h},k={self.loss.k})")
        elif self.loss:
            parts.append(f"loss {self.loss}")
        if self.queue:
            parts.append(f"queue {self.queue}")
        for name in ("reorder", "duplicate", "corrupt"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name} {value}")
        if self.aqm is not None:
            parts.append(f"aqm {self.aqm}")
        if self.ecn is not None:
            parts.append("ecn" if self.ecn else "no ecn")
        return ", ".join(parts) or "none"


# the keys of ``Impairment.as_fields``: its one JSON form
FIELD_NAMES = ("rate_bps", "delay_s", "jitter_s", "distribution", "loss", "loss_gilbert_elliott",
               "queue", "reorder", "duplicate", "corrupt", "aqm", "ecn")
# the one list of a link's impairment keys (the loader, ``link set``, the schema use it)
IMPAIRMENT_KEYS = ("rate", "delay", "jitter", "distribution", "loss", "queue",
                   "reorder", "duplicate", "corrupt", "aqm", "ecn")


def parse_impairment(data: dict[str, Any], *, file: str | None, path: str,
                     partial: bool = False) -> Impairment:
    """Read the impairment keys of ``data`` (other keys are the caller's business).

    ``partial`` allows jitter without delay (for run-time changes that merge
    into an existing impairment).
    """

    def err(key: str, msg: str) -> ConfigError:
        return ConfigError(msg, file=file, path=f"{path}.{key}")

    values: dict[str, Any] = {}
    for key, parser in (("rate", Rate.parse), ("delay", Duration.parse),
                        ("jitter", Duration.parse), ("queue", Queue.parse),
                        ("reorder", Percent.parse), ("duplicate", Percent.parse),
                        ("corrupt", Percent.parse)):
        if key in data and data[key] is not None:
            try:
                values[key] = parser(data[key])
            except UnitError as exc:
                raise err(key, str(exc)) from None
    if "distribution" in data and data["distribution"] is not None:
        dist = data["distribution"]
        if dist not in JITTER_DISTRIBUTIONS:
            raise err("distribution", f"unknown jitter distribution {dist!r}; "
                      f"choose one of {', '.join(JITTER_DISTRIBUTIONS)}")
        values["distribution"] = dist
    if "loss" in data and data["loss"] is not None:
        values["loss"] = _parse_loss(data["loss"], err)
    if data.get("aqm") is not None:
        values["aqm"] = _parse_aqm(data["aqm"], err)
    if data.get("ecn") is not None:
        values["ecn"] = _parse_bool(data["ecn"], err("ecn", "ecn is true or false, not "
                                                     f"{data['ecn']!r}"))
    imp = Impairment(**values)
    if not partial:
        _check_aqm(imp, err)
        if imp.jitter is not None and imp.delay is None:
            raise err("jitter", "jitter needs a delay (jitter varies the delay around its mean)")
        if imp.distribution is not None and imp.jitter is None:
            raise err("distribution", "a jitter distribution needs a jitter")
        if imp.jitter is not None and imp.delay is not None and imp.jitter > imp.delay \
                and (imp.distribution in (None, "uniform")):
            raise err("jitter", f"jitter {imp.jitter} is larger than the delay {imp.delay}: "
                      "packets would need a negative delay")
        if imp.reorder is not None and imp.delay is None:
            raise err("reorder", "reordering needs a delay (reordered packets skip the delay line)")
    return imp


def _parse_loss(raw: object, err: Any) -> Percent | GilbertElliott:
    """``loss: 1%`` or a Gilbert-Elliott mapping ``{p, r, h, k}``."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"p", "r", "h", "k"}
        if unknown:
            raise err("loss", f"unknown key(s) {', '.join(sorted(unknown))} in a "
                      "Gilbert-Elliott loss model (keys: p, r, h, k)")
        if "p" not in raw or "r" not in raw:
            raise err("loss", "a Gilbert-Elliott loss model needs at least p and r")
        try:
            return GilbertElliott(**{k: Percent.parse(v) for k, v in raw.items()})
        except UnitError as exc:
            raise err("loss", str(exc)) from None
    try:
        return Percent.parse(raw)
    except UnitError as exc:
        raise err("loss", str(exc)) from None


def _parse_bool(value: object, error: ConfigError) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise error


def _parse_aqm(raw: object, err: Any) -> Aqm:
    """``aqm: codel`` or ``aqm: {kind: codel, target: 5ms, interval: 100ms, limit: 1000}``."""
    spec = {"kind": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict) or spec.get("kind") not in AQM_KINDS:
        kind = spec.get("kind") if isinstance(spec, dict) else raw
        near = difflib.get_close_matches(str(kind).replace("-", "_"), AQM_KINDS, n=1, cutoff=0.7)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise err("aqm", f"unknown queue discipline {kind!r}; {hint}choose one of "
                  f"{', '.join(AQM_KINDS)} (a name, or a mapping with kind and parameters)")
    kind = spec["kind"]
    extra = sorted(set(spec) - {"kind", *AQM_PARAMETERS[kind]})
    if extra:
        allowed = ", ".join(AQM_PARAMETERS[kind]) or "none"
        raise err("aqm", f"{kind} takes no {', '.join(extra)} (its parameters: {allowed})")
    values: dict[str, Any] = {}
    for key in ("target", "interval"):
        if spec.get(key) is not None:
            try:
                values[key] = Duration.parse(spec[key])
            except UnitError as exc:
                raise err(f"aqm.{key}", str(exc)) from None
            if values[key].seconds <= 0:
                raise err(f"aqm.{key}", f"{key} must be positive")
    if spec.get("limit") is not None:
        limit = spec["limit"]
        if isinstance(limit, str) and re.fullmatch(r"[0-9]{1,10}p", limit.strip()):
            limit = int(limit.strip()[:-1])
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= 2**31:
            raise err("aqm.limit", f"limit is a number of packets (e.g. 1000 or '1000p'), "
                      f"not {spec['limit']!r}")
        values["limit"] = limit
    return Aqm(kind, **values)


def aqm_problems(imp: Impairment) -> list[tuple[str, str]]:
    """(key, why) for what is incoherent about ``imp``'s queue: an AQM manages the
    bottleneck's queue, which only a rate makes; ECN needs one that marks. A file and a
    live change (``link set``, a schedule) are held to the same rules."""
    problems = []
    if imp.aqm is not None and imp.aqm.kind != "fifo" and imp.rate is None:
        problems.append(("aqm", f"aqm {imp.aqm.kind} manages the bottleneck queue: give the "
                         "link a rate (without one nothing queues)"))
    if imp.ecn and (imp.aqm is None or imp.aqm.kind == "fifo"):
        problems.append(("ecn", "ecn: true needs an AQM that marks (aqm: codel, fq_codel, red "
                         "or pie); a fifo only drops"))
    return problems


def _check_aqm(imp: Impairment, err: Any) -> None:
    for key, why in aqm_problems(imp):
        raise err(key, why)
