"""``testbed link show`` for people: what is not there is not printed as ``None``."""

from __future__ import annotations

from testbed.cli.links import kernel_lines


def test_a_missing_tbf_is_left_out_not_printed_as_none():
    lines = kernel_lines({"backend": "userspace", "tbf": None, "offloads": {"tso": True},
                          "link_engine": {"pid": 7, "counters": {"released": 3,
                                                                  "bottleneck": None}}})
    assert not any("None" in line for line in lines), lines
    assert not any(line.startswith("tbf") for line in lines), lines
    assert "offloads: tso on" in lines and any("released 3" in line for line in lines), lines


def test_a_tbf_is_shown_with_its_rate():
    lines = kernel_lines({"tbf": {"rate_bytes": 2_500_000, "limit": 30000}})
    assert lines == ["tbf: rate 20 Mbit/s, limit 30000 B"], lines
