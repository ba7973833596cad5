"""The ftrace ring buffer's binary layout: sub-buffer pages, event headers, event formats.

What ``per_cpu/cpuN/trace_pipe_raw`` returns is one sub-buffer per read: a
page header (``events/header_page``: a u64 time stamp, then ``commit``, a
``local_t`` whose low bits are the number of data bytes and whose top bits
say whether events were lost before this page), then events. Each event
starts with a 32-bit header (``events/header_event``): ``type_len`` in the
low 5 bits, ``time_delta`` in the other 27. ``type_len`` 1..28 is a data
event of ``type_len * 4`` bytes; 0 is a data event whose length (plus 4) is
in the next word; 29 is padding (a discarded event, or with a zero delta the
end of the page); 30 extends the delta by a word (``<< 27``); 31 is an
absolute time stamp. The layout is Documentation/trace/ring-buffer-design
and libtraceevent's kbuffer.c, which this follows.

An event's own bytes are described by its ``format`` file: each field's
offset, size and signedness. ``parse_format`` reads one; ``FieldReader``
pulls named fields out of a record by those offsets. Everything here is pure
(bytes in, values out) and never raises on a short or damaged page: it stops
and says how many bytes it could not read.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Iterator

TYPE_PADDING = 29
TYPE_TIME_EXTEND = 30
TYPE_TIME_STAMP = 31
TS_SHIFT = 27
COMMIT_MASK = (1 << 27) - 1
MISSED_EVENTS = 1 << 31
MISSED_STORED = 1 << 30

_FIELD = re.compile(r"field:\s*(?P<decl>[^;]+?)\s*;\s*offset:\s*(?P<offset>\d+)\s*;"
                    r"\s*size:\s*(?P<size>\d+)\s*;\s*signed:\s*(?P<signed>\d+)\s*;")
_NAME = re.compile(r"^name:\s*(\S+)", re.M)
_ID = re.compile(r"^ID:\s*(\d+)", re.M)
_INTS = {(1, False): "B", (1, True): "b", (2, False): "H", (2, True): "h",
         (4, False): "I", (4, True): "i", (8, False): "Q", (8, True): "q"}


@dataclass(frozen=True)
class Field:
    """One field of an event record: where it is and how to read it."""

    name: str
    offset: int
    size: int
    signed: bool
    is_array: bool

    @property
    def struct_code(self) -> str | None:
        """The ``struct`` code of a scalar field, None for arrays and odd sizes."""
        return None if self.is_array else _INTS.get((self.size, self.signed))


@dataclass(frozen=True)
class EventFormat:
    """An event's ``format`` file: its name, numeric id and fields."""

    name: str
    id: int
    fields: dict[str, Field]

    def as_dict(self) -> dict:
        return {"name": self.name, "id": self.id,
                "fields": [[f.name, f.offset, f.size, int(f.signed), int(f.is_array)]
                           for f in self.fields.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> EventFormat:
        fields = {f[0]: Field(f[0], int(f[1]), int(f[2]), bool(f[3]), bool(f[4]))
                  for f in data["fields"]}
        return cls(str(data["name"]), int(data["id"]), fields)


def parse_fields(text: str) -> dict[str, Field]:
    """Every ``field:...;offset:..;size:..;signed:..;`` line, by name (the first wins:
    header_page declares ``commit`` and ``overwrite`` at the same offset)."""
    out: dict[str, Field] = {}
    for m in _FIELD.finditer(text):
        decl = m["decl"]
        is_array = decl.endswith("]")
        name = re.sub(r"\[.*\]$", "", decl).split()[-1].lstrip("*")
        out.setdefault(name, Field(name, int(m["offset"]), int(m["size"]),
                                   m["signed"] == "1", is_array))
    return out


def parse_format(text: str) -> EventFormat:
    """An event's ``format`` file. ValueError if it has no name or ID line."""
    name, ident = _NAME.search(text), _ID.search(text)
    if not name or not ident:
        raise ValueError("not an event format file (no name: or ID: line)")
    return EventFormat(name[1], int(ident[1]), parse_fields(text))


@dataclass(frozen=True)
class PageLayout:
    """Where a sub-buffer page keeps its time stamp, commit word and data."""

    timestamp_offset: int = 0
    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = 16

    @classmethod
    def from_header_page(cls, text: str) -> PageLayout:
        fields = parse_fields(text)
        return cls(fields["timestamp"].offset, fields["commit"].offset,
                   fields["commit"].size, fields["data"].offset)


@dataclass
class Page:
    """One decoded sub-buffer: its events and what it says was lost."""

    timestamp: int
    events: list[tuple[int, bytes]] = field(default_factory=list)  # (time stamp ns, record)
    lost: int = 0           # events lost before this page (-1: some, count not stored)
    unreadable: int = 0     # bytes at the end the decoder could not make sense of


def decode_page(page: bytes, layout: PageLayout = PageLayout()) -> Page:
    """The events of one sub-buffer page, each with its absolute time stamp (ns)."""
    if len(page) < layout.data_offset:
        return Page(0, unreadable=len(page))
    (timestamp,) = struct.unpack_from("<Q", page, layout.timestamp_offset)
    code = "<Q" if layout.commit_size == 8 else "<I"
    (commit,) = struct.unpack_from(code, page, layout.commit_offset)
    size = commit & COMMIT_MASK
    start = layout.data_offset
    end = min(start + size, len(page))
    out = Page(timestamp, lost=_lost(page, commit, end, layout.commit_size))
    out.unreadable = (start + size) - end
    ts = timestamp
    for ts, record in _events(page, start, end, ts, out):
        out.events.append((ts, record))
    return out


def _lost(page: bytes, commit: int, end: int, word: int) -> int:
    if not commit & MISSED_EVENTS:
        return 0
    if commit & MISSED_STORED and end + word <= len(page):
        return int.from_bytes(page[end:end + word], "little")
    return -1


def _events(page: bytes, off: int, end: int, ts: int, out: Page) -> Iterator[tuple[int, bytes]]:
    unpack = struct.unpack_from
    while off + 4 <= end:
        (word,) = unpack("<I", page, off)
        type_len, delta = word & 0x1F, word >> 5
        off += 4
        if type_len == TYPE_PADDING:
            if delta == 0:      # the rest of the page is empty
                return
            if off + 4 > end:
                break
            off += unpack("<I", page, off)[0]
            ts += delta
        elif type_len in (TYPE_TIME_EXTEND, TYPE_TIME_STAMP):
            if off + 4 > end:
                break
            value = (unpack("<I", page, off)[0] << TS_SHIFT) + delta
            off += 4
            ts = ts + value if type_len == TYPE_TIME_EXTEND else (ts & ~((1 << 59) - 1)) | value
        else:
            if type_len == 0:
                if off + 4 > end:
                    break
                length = unpack("<I", page, off)[0] - 4
                off += 4
            else:
                length = type_len * 4
            if length < 0 or off + length > end:
                break
            ts += delta
            yield ts, page[off:off + length]
            off += (length + 3) & ~3
    out.unreadable += max(0, end - off)


def record_struct(fmt: EventFormat, names: tuple[str, ...]) -> tuple[tuple[str, ...], struct.Struct]:
    """One ``struct`` reading ``names`` (those the format has) out of a record in a single
    unpack: the fields in offset order with pad bytes between, arrays as ``bytes``."""
    fields = sorted((fmt.fields[n] for n in names if n in fmt.fields), key=lambda f: f.offset)
    code, pos = "<", 0
    for f in fields:
        if f.offset < pos:      # overlapping fields (a union): cannot read both in one go
            raise ValueError(f"{fmt.name}: field {f.name} overlaps the one before it")
        code += f"{f.offset - pos}x" if f.offset > pos else ""
        code += f.struct_code or f"{f.size}s"
        pos = f.offset + f.size
    return tuple(f.name for f in fields), struct.Struct(code)


@dataclass(frozen=True)
class FieldReader:
    """Reads named fields of one event format out of its records."""

    fmt: EventFormat

    def value(self, record: bytes, name: str) -> int | bytes | None:
        """A scalar as int, an array as bytes; None when the record is too short or the
        event has no such field."""
        f = self.fmt.fields.get(name)
        if f is None or f.offset + f.size > len(record):
            return None
        code = f.struct_code
        if code is None:
            return record[f.offset:f.offset + f.size]
        return struct.unpack_from("<" + code, record, f.offset)[0]
