"""Link emulation backends: make one direction of a link behave as configured.

An ``Impairment`` (testbed.model.impairment) applies to one direction of a
link: on the egress of the sending side's interface ``ifname`` inside that
node's network namespace ``netns`` (/run/netns/<netns>).

Public API (what the realizer calls)
------------------------------------

``select_backend(requested: str = "auto") -> Selection``
    ``requested`` is ``"auto"``, ``"netem"`` or ``"userspace"``. ``auto``
    picks ``netem`` when the kernel offers sch_netem, else ``userspace``.
    Returns ``Selection(backend, reason)``; print ``reason`` ("sch_netem is
    not available on kernel 6.18...: using userspace"). Asking for
    ``netem`` on a kernel without it raises ``PreflightError``. Probing
    loads nothing and creates nothing (it reads /proc and /lib/modules).

``BACKENDS: dict[str, type]``
    Literal registry: ``{"netem": NetemBackend, "userspace": UserspaceBackend}``.

Every backend instance has ``name`` and:

``unsupported(imp: Impairment) -> list[str]``
    Pure. One entry per requested feature the backend cannot do, each
    starting with the feature's key. Empty list: everything is supported.
    The realizer must turn a non-empty list into an error naming the
    backend; ``apply``/``change`` also refuse (RealizeError) on their own.

``plan(netns, ifname, imp, rtt_hint: Duration | None, mtu: int) -> list[Step]``
    Pure. Printable steps (``str(step)``) for ``testbed plan``; ``rtt_hint``
    is the path's base RTT used for BDP-sized buffers (queue "1.5bdp", and
    the default buffer of 1 BDP when a rate has no queue); None = 100 ms.

``apply(netns, ifname, imp, *, owner_tag, state_dir, rtt_hint=None, mtu=1500) -> None``
    Makes it so, then reads back (qdiscs over netlink, iptables rules,
    the link engine's confirmed config and the kernel's NFQUEUE binding)
    and raises ``RealizeError`` if anything differs from the plan; on error
    what was made is removed again. ``owner_tag`` names every object made
    (iptables comment
    ``testbed:<owner>``, engine argv ``--owner``); ``state_dir`` receives
    ``emulation/<netns>/<ifname>.json`` plus the engine's files (``emulation/engine/``).
    Applying twice replaces the previous impairment.

``change(netns, ifname, imp, *, owner_tag, state_dir, exact=False, rtt_shift=0.0) -> Impairment``
    Merge ``imp`` (fields it sets replace, others stay; parse with
    ``partial=True``) into what is applied, without resetting the rest
    (no engine restart: its lane is reconfigured live). ``exact=True`` puts
    exactly ``imp`` in force instead (undoing a change), just as much in
    place. ``rtt_shift``: seconds the link's round trip changed by (a delay
    change in either direction), so buffers given in BDP are resized.
    Returns the result. What the change had to do besides (a tbf queue
    dropped because its burst shrank, see ``tbf.py``; a link engine lane
    started) is listed in the state record's ``notes``.

``remove(netns, ifname, *, owner_tag, state_dir) -> None``
    Undo everything made for this link direction: iptables rule, tbf qdisc, delay
    engine lane (the engine stops with its last lane), offload settings. Safe to
    repeat; without a state file it removes by exact owner-derived names.

``show(netns, ifname, *, owner_tag, state_dir) -> dict``
    What is in force as the kernel reports it (for results metadata).

``check_alive(netns, ifname, *, owner_tag, state_dir) -> None``
    Raises ``RealizeError`` if a user-space part (the link engine) has
    died: call it periodically during runs and before collecting results,
    so a crash becomes an error and never a silent pass-through (packets
    are dropped, not undelayed, while no engine listens).

Offloads: the userspace backend turns TSO/GSO/GRO off on the interface when
loss, jitter or reorder must act per packet; ``set_offloads(netns, ifname,
on)`` is exported so the realizer can do the same on other interfaces of
the path (a forwarded GSO packet from a sender with offloads on would still
be dropped or delayed as a whole).
"""

from __future__ import annotations

from typing import Any

_BACKEND_NAMES = ("BACKENDS", "Backend", "NetemBackend", "Selection", "Step",
                  "UserspaceBackend", "select_backend", "set_offloads")


def __getattr__(name: str) -> Any:
    if name in _BACKEND_NAMES:
        # lazily: the link engine's process imports this package, and pyroute2 (~0.4 s)
        # only belongs on the path of those who use a backend
        from testbed.emulation import backends
        return getattr(backends, name)
    raise AttributeError(f"module 'testbed.emulation' has no attribute {name!r}")


__all__ = list(_BACKEND_NAMES)
