"""Findings appended to a JSON-lines file, one finding per line, flushed to disk per batch."""
from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from opmas.connectors.records import FindingRecord
from opmas.connectors.sinks import SinkError


class JsonLinesSink:
    """Appends findings (their JSON, as published on NATS) to ``path``, created 0600 if missing."""

    name = "file"
    errors = (OSError,)  # a full or failing disk may come back; a bad path is refused by open()

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SinkError(f"sink file:{self.path}: cannot open: {exc.strerror or exc} ({exc.filename})") from exc
        self._file = os.fdopen(fd, "ab")

    async def write(self, findings: Sequence[FindingRecord]) -> None:
        if findings:
            await asyncio.to_thread(self._append, b"".join(f.json + b"\n" for f in findings))

    def _append(self, data: bytes) -> None:
        assert self._file is not None, "write before open"
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def build(target: str) -> JsonLinesSink:
    """``file:PATH``: PATH, relative to the current directory."""
    return JsonLinesSink(Path(target).expanduser().resolve())
