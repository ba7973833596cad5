"""What the link engine's unit tests put where a lane's NFQUEUE socket goes (no root)."""

from __future__ import annotations


class RecordingSocket:
    """Records every message the engine sends on a lane's socket."""

    def __init__(self, fd: int = 1000) -> None:
        self.sent: list[bytes] = []
        self.fd = fd

    def send(self, data: bytes) -> int:
        self.sent.append(bytes(data))
        return len(data)

    def fileno(self) -> int:
        return self.fd

    def getsockname(self) -> tuple[int, int]:
        return (4242, 0)
