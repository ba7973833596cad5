"""Undoing what ``realize`` made: by the journal, and by what the kernel shows.

Every namespace the testbed makes carries its instance's tag as an altname
on its ``lo`` (``testbed.<instance>.<node>``). ``teardown`` removes one
instance: the processes it recorded and any still inside its namespaces,
the namespaces, its state directory and the host changes no one else
needs. ``find_owned`` lists namespaces by that tag, for when the journal
is gone (a ``kill -9`` before it was written, or a deleted run directory).

``down`` and ``clean`` are what ``testbed down`` and ``testbed clean`` do
(``testbed.down`` and ``testbed.clean`` in Python): they find instances by
journal and by tag and return what they removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Iterable

from testbed.errors import RealizeError, TestbedError
from testbed.kernel import netns, tracefs
from testbed.kernel.rtnl import Rtnl
from testbed.model.topology import check_instance_name
from testbed.plan.types import NETNS_PREFIX, TAG_PREFIX
from testbed.realize import state

LOOPBACK = 1  # lo's ifindex in every namespace: where the ownership tag lives


def owner_of(name: str) -> str | None:
    """The instance whose tag is on namespace ``name`` (None: untagged or unreadable)."""
    with netns.Namespaces() as spaces:
        tags = namespace_tags(name, spaces)
    for tag in tags:
        parts = tag.split(".")
        if len(parts) >= 3 and parts[0] == "testbed":
            return ".".join(parts[1:-1])
    return None


def namespace_tags(name: str, spaces: netns.Namespaces) -> list[str]:
    """The altnames on a namespace's lo (empty if unreadable)."""
    try:
        with spaces.enter(name), Rtnl() as rtnl:
            return rtnl.altnames(LOOPBACK)
    except (OSError, RealizeError):
        return []


def find_owned(instance: str | None = None) -> dict[str, str]:
    """Namespaces the testbed owns, by kernel tag: {netns: instance}.

    Ownership needs both our name prefix and our tag on the namespace's lo,
    so a foreign namespace that merely looks like ours is never touched.
    """
    owned: dict[str, str] = {}
    # an instance's namespaces are all named tb-<instance>-<node>: look only at those
    prefix = NETNS_PREFIX if instance is None else f"{NETNS_PREFIX}{instance}-"
    candidates = [n for n in netns.list_names() if n.startswith(prefix)]
    if not candidates:
        return owned
    with netns.Namespaces() as spaces:
        for name in candidates:
            for tag in namespace_tags(name, spaces):
                if not tag.startswith(TAG_PREFIX):
                    continue
                inst, _, node = tag[len(TAG_PREFIX):].rpartition(".")
                if inst and (instance is None or inst == instance) \
                        and name == f"{NETNS_PREFIX}{inst}-{node}":
                    owned[name] = inst
    return owned


def process_start(pid: int) -> float | None:
    try:
        import psutil
        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone or unreadable: not ours to kill
        return None


def kill_processes(pids: Iterable[int], grace: float = 1.0) -> list[int]:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the pids signalled."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Teardown:
    """What taking one instance down removed."""

    instance: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    host_restored: list[str] = field(default_factory=list)
    trace_instances: list[str] = field(default_factory=list)     # tcp events' tracefs instances
    tracefs_unmounted: str | None = None     # testbed mounted tracefs for runs; the last user
    seconds: float = 0.0


def teardown(instance: str, *, extra_namespaces: Iterable[str] = ()) -> Teardown:
    """Remove everything instance ``instance`` made: processes, namespaces, state, host changes."""
    started = time.monotonic()
    journal = state.Journal(instance)
    names = set(journal.namespaces()) | set(extra_namespaces)
    # only this instance's own names (tb-<instance>-<node>), whatever a journal says
    names = {n for n in names if n.startswith(f"{NETNS_PREFIX}{instance}-") and "/" not in n
             and netns.exists(n)}
    report = Teardown(instance)
    # processes recorded by pid + start time, then anything still inside our namespaces
    recorded = [pid for pid, start in journal.processes()
                if (s := process_start(pid)) is not None and abs(s - start) < 0.05]
    report.processes = kill_processes(set(recorded) | set(netns.processes_in(names)))
    with netns.Namespaces() as spaces:
        for name in sorted(names):
            if spaces.remove(name):
                report.namespaces.append(name)
    # a run's tcp events buffer (journalled before it was made): its reader is gone with
    # the processes, so the kernel lets it go
    report.trace_instances = tracefs.remove_owned(instance, journal.dir)
    report.host_restored = state.release_host_changes(instance)
    report.tracefs_unmounted = state.release_tracefs(instance)
    journal.remove()
    state.tidy()
    report.seconds = time.monotonic() - started
    return report


@dataclass
class Cleaned:
    """What ``clean`` removed: one ``Teardown`` per instance, and host changes undone."""

    instances: list[Teardown] = field(default_factory=list)
    host_restored: list[str] = field(default_factory=list)


def instances_up() -> set[str]:
    """Every instance with a state directory or a namespace carrying its tag."""
    return set(state.instances()) | set(find_owned().values())


def down(name: str | None = None) -> Teardown | None:
    """Take instance ``name`` down (None: the only one up). None when it was not up.

    Goes by the kernel's tags as well as the journal, so an instance whose
    state directory was lost still comes down completely.
    """
    if name is None:
        up = instances_up()
        if len(up) > 1:
            raise TestbedError(f"several testbeds are up ({', '.join(sorted(up))}): "
                               "choose one with --name")
        if not up:
            return None
        name = up.pop()
    owned = list(find_owned(name))
    if not owned and not state.instance_dir(name).exists():
        return None
    return teardown(name, extra_namespaces=owned)


def leftovers(name: str | None = None) -> dict[str, list[str]]:
    """What ``clean(name)`` would remove: {instance: its namespaces that exist}.

    An instance may have no namespace left, only its state directory.
    """
    owned = find_owned(name)
    instances = set(state.instances()) | set(owned.values())
    if name is not None:
        instances &= {name}
    found = {}
    for inst in sorted(instances):
        names = set(state.Journal(inst).namespaces()) | {n for n, i in owned.items() if i == inst}
        found[inst] = sorted(n for n in names if netns.exists(n))
    return found


def clean(name: str | None = None) -> Cleaned:
    """Remove what every instance (or only ``name``) left: after ``kill -9``, a lost journal.

    Without ``name`` this is every instance on the machine, and host changes
    whose instances are all gone are undone too.
    """
    if name is not None:
        check_instance_name(name, "name")   # as down and attach: '..' must not reach a path
    cleaned = Cleaned()
    for inst, namespaces in leftovers(name).items():
        cleaned.instances.append(teardown(inst, extra_namespaces=namespaces))
    if name is None:
        tracefs.remove_owned(None, None)    # those of instances whose journal is gone too
        cleaned.host_restored = state.release_host_changes("")
        state.release_tracefs("")
    state.tidy()
    return cleaned
