"""The link engine's start-up measurement of an undelayed NFQUEUE pass (passcal.py), with
real packets in a private namespace: it measures, leaves nothing behind, and says why
when it cannot measure."""

from __future__ import annotations

import pytest

from testbed.emulation import passcal
from testbed.kernel import netns

pytestmark = [pytest.mark.root]


def test_the_pass_is_measured_with_real_packets_and_leaves_no_namespace():
    before = netns.list_names()
    samples, why = passcal.measure_pass(count=40)
    assert why is None
    assert len(samples.wake) >= passcal.MIN_SAMPLES
    assert len(samples.direct) == len(samples.queued) == 40
    estimate = passcal.pass_estimate(samples)
    assert estimate is not None and 0 < estimate <= passcal.PASS_MAX_NS
    assert netns.list_names() == before     # unnamed: nothing to clean up


def test_without_iptables_restore_the_pass_is_not_measured_and_it_says_why(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))      # an empty directory: no tools
    samples, why = passcal.measure_pass(count=5)
    assert why == "iptables-restore is not installed"
    assert passcal.pass_estimate(samples) is None
