"""The ftrace ring-buffer page decoder and event format parser (kernel/ringbuffer), on pages
built by hand to the documented layout and on a page recorded from this kernel."""

from __future__ import annotations

import struct

import pytest

from testbed.kernel import ringbuffer as rb

HEADER_PAGE = """\
\tfield: u64 timestamp;\toffset:0;\tsize:8;\tsigned:0;
\tfield: local_t commit;\toffset:8;\tsize:8;\tsigned:1;
\tfield: int overwrite;\toffset:8;\tsize:1;\tsigned:1;
\tfield: char data;\toffset:16;\tsize:4080;\tsigned:0;
"""

CONG_STATE_FORMAT = """\
name: tcp_cong_state_set
ID: 2271
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u8 cong_state;\toffset:62;\tsize:1;\tsigned:0;

print fmt: "family=%s sport=%hu dport=%hu", REC->family, REC->sport, REC->dport
"""


def _event(type_len: int, delta: int, body: bytes) -> bytes:
    return struct.pack("<I", type_len | (delta << 5)) + body


def _data(delta: int, record: bytes) -> bytes:
    """A data event as the kernel writes it: short ones with their length in type_len,
    longer ones (over 28 words) with it in the first word (which counts itself)."""
    padded = record + b"\0" * (-len(record) % 4)
    if len(padded) <= 28 * 4:
        return _event(len(padded) // 4, delta, padded)
    return _event(0, delta, struct.pack("<I", len(record) + 4) + padded)


def _page(timestamp: int, body: bytes, *, missed: int | None = None, size: int = 4096) -> bytes:
    commit = len(body)
    tail = b""
    if missed is not None:
        commit |= rb.MISSED_EVENTS | rb.MISSED_STORED
        tail = struct.pack("<Q", missed)
    page = struct.pack("<QQ", timestamp, commit) + body + tail
    return page + b"\0" * (size - len(page))


def test_header_page_gives_the_layout():
    assert rb.PageLayout.from_header_page(HEADER_PAGE) == rb.PageLayout(0, 8, 8, 16)


def test_format_file_fields_and_one_struct_for_a_record():
    fmt = rb.parse_format(CONG_STATE_FORMAT)
    assert (fmt.name, fmt.id) == ("tcp_cong_state_set", 2271)
    assert fmt.fields["saddr_v6"] == rb.Field("saddr_v6", 30, 16, False, True)
    assert fmt.fields["common_pid"].struct_code == "i"
    names, layout = rb.record_struct(fmt, ("cong_state", "sport", "saddr", "no_such_field"))
    assert names == ("sport", "saddr", "cong_state")
    record = bytearray(64)
    struct.pack_into("<HH", record, 16, 5201, 40000)
    record[22:26] = bytes([10, 0, 0, 1])
    record[62] = 3
    assert layout.unpack_from(bytes(record)) == (5201, bytes([10, 0, 0, 1]), 3)
    assert rb.EventFormat.from_dict(fmt.as_dict()) == fmt
    with pytest.raises(ValueError):
        rb.parse_format("no name here")


def test_page_events_short_long_extended_and_discarded():
    short, long_ = b"S" * 12, b"L" * 136
    body = (_data(5, short)
            + _data(7, long_)
            + _event(rb.TYPE_TIME_EXTEND, 3, struct.pack("<I", 2))   # + (2 << 27) + 3
            + _data(1, short)
            + _event(rb.TYPE_PADDING, 4, struct.pack("<I", 12) + b"\0" * 8)  # a discarded event
            + _data(6, long_))
    page = rb.decode_page(_page(1000, body))
    base = 1000 + 5 + 7
    assert page.events == [(1005, short), (base, long_), (base + (2 << 27) + 3 + 1, short),
                           (base + (2 << 27) + 3 + 1 + 4 + 6, long_)]
    assert (page.lost, page.unreadable) == (0, 0)


def test_absolute_time_stamp_replaces_the_running_time():
    body = _data(5, b"a" * 8) + _event(rb.TYPE_TIME_STAMP, 9, struct.pack("<I", 1)) + _data(2, b"b" * 8)
    page = rb.decode_page(_page(100, body))
    assert [ts for ts, _ in page.events] == [105, (1 << 27) + 9 + 2]


def test_end_of_page_padding_and_lost_events():
    body = _data(1, b"x" * 8) + _event(rb.TYPE_PADDING, 0, b"")
    page = rb.decode_page(_page(50, body + b"garbage!", missed=17))
    assert page.events == [(51, b"x" * 8)] and page.lost == 17
    flagged = bytearray(_page(50, body))
    struct.pack_into("<Q", flagged, 8, len(body) | rb.MISSED_EVENTS)   # lost, count not stored
    assert rb.decode_page(bytes(flagged)).lost == -1


def test_damaged_pages_are_counted_not_raised():
    body = _data(1, b"x" * 8) + _data(2, b"L" * 200)
    whole = _page(0, body)
    cut = whole[:16 + len(body) - 50]                  # the page ends inside the second event
    page = rb.decode_page(cut)
    assert page.events == [(1, b"x" * 8)] and page.unreadable > 0
    assert rb.decode_page(b"\1\2\3").unreadable == 3
    lying = bytearray(whole)
    struct.pack_into("<I", lying, 16 + 12 + 4, 10 ** 6)   # a length word past the page
    assert rb.decode_page(bytes(lying)).events == [(1, b"x" * 8)]


def test_field_reader_reads_scalars_and_arrays_and_short_records():
    reader = rb.FieldReader(rb.parse_format(CONG_STATE_FORMAT))
    record = bytearray(64)
    struct.pack_into("<H", record, 18, 443)
    record[26:30] = bytes([192, 0, 2, 1])
    assert reader.value(bytes(record), "dport") == 443
    assert reader.value(bytes(record), "daddr") == bytes([192, 0, 2, 1])
    assert reader.value(bytes(record[:40]), "cong_state") is None
    assert reader.value(bytes(record), "nope") is None
