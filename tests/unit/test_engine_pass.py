"""The woken-arrival pass (passcal.py): its estimate from the calibration samples, the
stamping rule of the engine's loop, and the send time a calibration datagram carries."""

from __future__ import annotations

import random
import struct

from testbed.emulation import passcal


def test_a_low_mean_is_the_mean_of_the_lower_three_quarters():
    rng = random.Random(3)
    # bimodal, as measured (a wake on the sender's CPU or on the other one)
    samples = [rng.choice((12_000, 40_000)) + rng.randrange(-2_000, 2_000) for _ in range(100)]
    assert passcal.low_mean(samples) == sum(sorted(samples)[:75]) // 75
    # a machine busy at start: a quarter of the wakes hundreds of us late move it not at all
    busy = samples[:75] + [300_000] * 25
    assert passcal.low_mean(busy) == sum(sorted(samples[:75])) // 75
    assert passcal.low_mean(samples[:passcal.MIN_SAMPLES - 1]) is None


def test_the_pass_is_what_the_queue_adds_to_the_direct_path_within_the_cap():
    direct = [5_000 + i for i in range(100)]
    queued = [65_000 + i for i in range(100)]
    assert passcal.pass_estimate(passcal.PassSamples([], direct, queued)) == 60_000
    assert passcal.pass_estimate(passcal.PassSamples([], direct, [10**9] * 100)) \
        == passcal.PASS_MAX_NS
    # never stamped after its wake-up, and nothing without enough of both sides
    assert passcal.pass_estimate(passcal.PassSamples([], queued, direct)) == 0
    assert passcal.pass_estimate(passcal.PassSamples([], direct, queued[:5])) is None
    assert passcal.pass_estimate(passcal.PassSamples([], [], queued)) is None


def test_a_woken_arrival_is_stamped_the_pass_before_the_wake_the_timer_keeps_its_lead():
    assert passcal.woken_lead(True, lead_ns=8_000, pass_ns=35_000) == 35_000
    assert passcal.woken_lead(False, lead_ns=8_000, pass_ns=35_000) == 8_000
    assert passcal.woken_lead(True, lead_ns=8_000, pass_ns=None) == 8_000   # not measured


def test_the_send_time_is_read_after_the_ip_and_udp_headers():
    ip = bytes([0x46]) + bytes(23)                 # IHL 6: a 24-byte header with options
    packet = ip + bytes(8) + struct.pack("=qq", 123_456_789, 987_654_321)
    assert passcal.sent_time(packet) == 123_456_789
    assert passcal.sent_time(packet[:-1]) is None
    assert passcal.sent_time(b"") is None


def test_up_says_how_woken_arrivals_are_stamped_or_why_the_pass_was_not_measured():
    from testbed.emulation.enginectl import pass_clause
    measured = {"lead_ns": 9_000, "calibration": {"pass_us": 27.5, "pass_error": None}}
    assert "stamped 27.5 us before the wake-up" in pass_clause(measured)
    failed = {"lead_ns": 9_000, "calibration": {"pass_us": None,
                                                "pass_error": "iptables-restore is not installed"}}
    assert pass_clause(failed) == ("its NFQUEUE pass could not be measured (iptables-restore is "
                                   "not installed): arrivals that wake it are stamped the "
                                   "timer's lead (9.0 us) early")
