"""The backend registry and the choice between them (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.emulation.common import Step
from testbed.emulation.netem import NetemBackend, netem_available
from testbed.emulation.offload import set_offloads
from testbed.emulation.userspace import UserspaceBackend
from testbed.errors import PreflightError

BACKENDS: dict[str, type] = {"netem": NetemBackend, "userspace": UserspaceBackend}

Backend = NetemBackend | UserspaceBackend


@dataclass(frozen=True)
class Selection:
    backend: Backend
    reason: str


def select_backend(requested: str = "auto", seed: int | None = None) -> Selection:
    """Choose the backend (see the module docstring). ``seed``: the userspace backend's
    random loss and jitter draws (a run's seed, so that a point's emulation repeats)."""
    if requested not in ("auto", *BACKENDS):
        raise PreflightError(f"unknown link emulation backend {requested!r}; "
                             f"choose auto, {', '.join(BACKENDS)}")
    available, why = netem_available()
    if requested == "netem":
        if not available:
            raise PreflightError(f"link emulation backend netem was requested but {why}; "
                                 "install the kernel's sch_netem module "
                                 "(Debian/Ubuntu: linux-modules-extra) or use --link-backend userspace")
        return Selection(NetemBackend(), f"netem requested; {why}")
    if requested == "userspace":
        return Selection(UserspaceBackend(seed=seed), "userspace requested")
    if available:
        return Selection(NetemBackend(), f"auto: {why}: using netem")
    return Selection(UserspaceBackend(seed=seed), f"auto: {why}: using userspace "
                                                  "(tbf + NFQUEUE link engine)")


__all__ = ["BACKENDS", "Backend", "NetemBackend", "Selection", "Step", "UserspaceBackend",
           "select_backend", "set_offloads"]
