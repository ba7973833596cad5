"""What a collector lost, as lines for the run's record (result.json
``summary.data_loss`` and ``suspect_reasons``) instead of an exception that
would lose the whole run.

``Damage``: what could not be read of a file a collector wrote (the tcp_info
spool, a pcap): a full disk, a process killed mid-write or a flipped byte leave
such files cut short or with records that cannot be framed. Readers keep what
came before, skip what they cannot read, and note it. ``sampler_losses``: a
sampling thread (qdisc, host load) that stopped on an error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Damage:
    """Where a file of records ends early, how many records were skipped, or why none
    could be read at all."""

    what: str                      # "tcp_info spool", "pcap"
    unit: str                      # what a record holds, plural: "samples", "packets"
    size: int
    truncated_at: int | None = None
    skipped: int = 0
    first_skipped_at: int | None = None
    unreadable: str | None = None  # why nothing could be read

    def truncate(self, offset: int) -> None:
        self.truncated_at = offset

    def skip(self, offset: int) -> None:
        self.skipped += 1
        if self.first_skipped_at is None:
            self.first_skipped_at = offset

    def losses(self, kept: int) -> list[str]:
        """One line per kind of damage, for the run's record (empty if the file was whole)."""
        if self.unreadable is not None:
            return [f"{self.what}: {self.unreadable}"]
        out = []
        if self.truncated_at is not None:
            out.append(f"{self.what} truncated at byte {self.truncated_at} of {self.size}: "
                       f"{kept} {self.unit} kept, the rest lost")
        if self.skipped:
            out.append(f"{self.what}: {self.skipped} unreadable record(s) skipped (the first "
                       f"at byte {self.first_skipped_at})")
        return out


def sampler_losses(name: str, error: BaseException | None, rows: list[dict[str, Any]]) -> list[str]:
    """'<name> sampler failed after t s: <error>; N samples kept, the rest lost', or nothing."""
    if error is None:
        return []
    when = f" after {rows[-1]['t']:g} s" if rows else " before its first sample"
    return [f"{name} sampler failed{when}: {type(error).__name__}: {error}; {len(rows)} samples "
            "kept, the rest lost"]

